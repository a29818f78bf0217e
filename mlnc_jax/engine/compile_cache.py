"""JAX's persistent compilation cache, on by default in a per-user directory.

Compiling the engine's programs costs seconds; solving a small problem costs milliseconds.
The first `solve` (or command) on a machine compiles, later processes load the programs
from disk. The directory is, in order of precedence:

* `--compile-cache DIR|off` on the command line, or `enable(DIR)` / `enable("off")`;
* a cache the caller configured in JAX (`jax_compilation_cache_dir`, or the environment
  variable `JAX_COMPILATION_CACHE_DIR`): left as it is;
* `MLNC_CACHE_DIR` (`off` disables it);
* `$XDG_CACHE_HOME/mlnc_jax/xla`, else `~/.cache/mlnc_jax/xla`.

This is the one piece of JAX's global configuration the package sets (see `__init__`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_dir", "enable", "ensure", "current_dir"]

# every program: a hundred small ones cost as much as one large one
_MIN_COMPILE_SECONDS = 0.0
_state = {"decided": False}


def default_dir() -> Path | None:
    """The per-user default (`None` where `MLNC_CACHE_DIR=off`)."""
    env = os.environ.get("MLNC_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() == "off" else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlnc_jax" / "xla"


def current_dir() -> str | None:
    import jax

    return jax.config.jax_compilation_cache_dir or None


def enable(directory) -> Path | None:
    """Use `directory` as the cache (`"off"` or `None`: no persistent cache). An unusable
    directory turns the cache off rather than failing a solve; returns the directory used."""
    import jax

    _state["decided"] = True
    if directory is None or str(directory).strip().lower() == "off":
        jax.config.update("jax_compilation_cache_dir", None)
        return None
    path = Path(directory).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK | os.X_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_SECONDS)
    return path


def ensure() -> None:
    """Turn the default cache on once per process, unless the caller chose one already."""
    if _state["decided"]:
        return
    _state["decided"] = True
    if current_dir() or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    enable(default_dir())
