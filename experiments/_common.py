"""What every figure script shares: the results-file contract and the figure style.

A figure module defines `NAME`, a frozen dataclass `Config`, `QUICK` and `FULL` instances,
`compute(cfg, progress) -> (arrays, info)` and `plot(arrays, meta, path_base)`.
`run_experiment` writes `results/NAME.npz` + `results/NAME.json` (config, seeds, versions,
device, dtype, wall time) and plots from the files it just wrote, never from memory.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from mlnc_jax.plotting import LOSS_COLORS, apply_style, savefig  # noqa: F401
from mlnc_jax.results_io import run_metadata, write_npz_atomic
from mlnc_jax.solvers import enable_x64


def results_paths(results_dir, name):
    d = Path(results_dir)
    return d / f"{name}.npz", d / f"{name}.json"


def run_experiment(module, *, quick: bool, results_dir, figures_dir, progress=None) -> dict:
    enable_x64()
    cfg = module.QUICK if quick else module.FULL
    results_dir, figures_dir = Path(results_dir), Path(figures_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    arrays, info = module.compute(cfg, progress)
    wall = time.perf_counter() - t0
    npz, _ = results_paths(results_dir, module.NAME)
    meta = run_metadata(experiment=module.NAME, quick=quick, config=dataclasses.asdict(cfg),
                        wall_time_s=wall, **info)
    write_npz_atomic(npz, arrays, meta)
    return plot_from_files(module, results_dir, figures_dir)


def plot_from_files(module, results_dir, figures_dir) -> dict:
    npz, js = results_paths(results_dir, module.NAME)
    with np.load(npz) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(Path(js).read_text())
    apply_style()
    fig = module.plot(arrays, meta)
    savefig(fig, Path(figures_dir) / f"{module.NAME}.png", formats=[".pdf"])
    return meta


def log_ticks_note(ax, text, loc=(0.02, 0.02)):
    ax.text(*loc, text, transform=ax.transAxes, fontsize=7, va="bottom", ha="left",
            bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="0.8", alpha=0.9))
