"""Writing results with their metadata, atomically.

Every results file carries config, seed, package and JAX versions, device, dtype and wall
time. Files are written to a temporary name and renamed, so an interrupted write never
leaves a half-written result under the final name.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_metadata", "write_json_atomic", "write_npz_atomic", "sidecar_path"]


def run_metadata(**fields: Any) -> dict:
    """Provenance block: versions, device, dtype, time, plus the caller's fields."""
    import jax

    from .._version import __version__

    dev = jax.devices()[0]
    meta = {
        "mlnc_jax_version": __version__,
        "jax_version": jax.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "device_count": jax.device_count(),
        "dtype": "float64" if jax.config.jax_enable_x64 else "float32",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    meta.update(fields)
    return meta


def jsonable(x):
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return None if np.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _tmp_in(directory: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
    return Path(name)


def write_json_atomic(path, obj) -> None:
    path = Path(path)
    tmp = _tmp_in(path.parent, ".json")
    try:
        with open(tmp, "w") as f:
            json.dump(jsonable(obj), f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sidecar_path(path) -> Path:
    """`RESULT.npz` → `RESULT.json`."""
    path = Path(path)
    return path.with_suffix(".json") if path.suffix == ".npz" else Path(str(path) + ".json")


def write_npz_atomic(path, arrays: Mapping[str, Any], metadata: Mapping | None = None) -> None:
    """Write `arrays` to `path` (npz) and `metadata` to its JSON sidecar, both atomically.

    The sidecar is renamed into place first and the npz last, so a complete npz always
    has its metadata.
    """
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"output directory does not exist: {path.parent}")
    tmp = _tmp_in(path.parent, ".npz")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
            f.flush()
            os.fsync(f.fileno())
        if metadata is not None:
            write_json_atomic(sidecar_path(path), metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
