"""Regenerate every figure: `python -m experiments [--quick] [--only NAME ...]`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from tqdm.auto import tqdm

from . import FIGURES
from ._common import run_experiment


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, same code paths (CI)")
    ap.add_argument("--only", nargs="+", choices=FIGURES, metavar="NAME",
                    help=f"only these figures: {', '.join(FIGURES)}")
    ap.add_argument("--figures-dir", default="figures")
    ap.add_argument("--results-dir", default="results")
    args = ap.parse_args(argv)
    names = args.only or list(FIGURES)
    t0 = time.perf_counter()
    bar = tqdm(names, desc="figures", unit="fig", file=sys.stderr)
    for name in bar:
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
        return main()
    except KeyboardInterrupt:
        print("python -m experiments: interrupted", file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(130)


if __name__ == "__main__":
    sys.exit(_main_interruptible())
