"""Regenerate every figure: `python -m experiments [--quick] [--only NAME ...]`."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import time
from pathlib import Path

import jax
from tqdm.auto import tqdm

from mlnc_jax.engine import interrupts

from . import FIGURES
from ._common import run_experiment


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, same code paths (CI)")
    ap.add_argument("--only", nargs="+", choices=FIGURES, metavar="NAME",
                    help=f"only these figures: {', '.join(FIGURES)}")
    ap.add_argument("--figures-dir", default="figures")
    ap.add_argument("--results-dir", default="results")
    ap.add_argument("--compile-cache", default=None, metavar="DIR",
                    help="persistent XLA compilation cache, reused by later runs (default: "
                         "RESULTS_DIR/.xla_cache; 'off' to compile everything afresh)")
    args = ap.parse_args(argv)
    names = args.only or list(FIGURES)
    if args.compile_cache != "off":
        # compiling the solver's programs costs far more than these figures' solves: keep
        # them on disk so that regenerating a figure does not compile them again
        cache = Path(args.compile_cache or Path(args.results_dir) / ".xla_cache")
        jax.config.update("jax_compilation_cache_dir", str(cache.resolve()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    t0 = time.perf_counter()
    bar = tqdm(names, desc="figures", unit="fig", file=sys.stderr)
    for name in bar:
        interrupts.check()
        bar.set_postfix_str(name)
        module = importlib.import_module(f"experiments.{name}")
        t = time.perf_counter()
        run_experiment(module, quick=args.quick, results_dir=args.results_dir,
                       figures_dir=args.figures_dir)
        tqdm.write(f"{name}: {time.perf_counter() - t:.1f} s -> {args.figures_dir}/{name}.png",
                   file=sys.stderr)
    print(f"{len(names)} figure(s) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def _main_interruptible() -> int:
    """Ctrl-C: one line, exit 130. Results files are written atomically, so nothing
    half-written stays behind; leaving through `os._exit` skips interpreter teardown, whose
    JAX atexit hook destroys the XLA client under a still-running computation (segfault)."""
    try:
        with interrupts.guard():
            return main()
    except KeyboardInterrupt:
        print("python -m experiments: interrupted", file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a broken stream must not stop the exit
                stream.flush()
        os._exit(130)


if __name__ == "__main__":
    sys.exit(_main_interruptible())
