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

from typing import NamedTuple

from mlnc_jax import UFMConfig, solve
from mlnc_jax.labels import LabelDistribution
from mlnc_jax.plotting import LOSS_COLORS, apply_style, savefig  # noqa: F401
from mlnc_jax.results_io import run_metadata, write_npz_atomic
from mlnc_jax.solvers import enable_x64


class Solution(NamedTuple):
    W: np.ndarray
    H: np.ndarray
    b: np.ndarray
    objective: float
    grad_norm: float
    certificate: float
    fallback: bool


def fast_solve(dist: LabelDistribution, config: UFMConfig, seed: int = 0, tol: float = 1e-10,
               rho_tol: float = 1e-6) -> Solution:
    """L-BFGS from the random start of `solve` (`flow_steps=0`: one compiled program less per
    shape), accepted only with the certificate of THEORY §3 (`‖∇F‖ ≤ tol`, `ρ ≤ 1 + rho_tol`,
    a global minimiser); otherwise `solve` with its gradient flow, flagged as a fallback."""
    r, fallback = solve(dist, config, seed=seed, tol=tol, flow_steps=0), False
    if not (bool(r.converged) and float(r.certificate) <= 1 + rho_tol):
        r, fallback = solve(dist, config, seed=seed, tol=tol), True
    return Solution(np.asarray(r.W), np.asarray(r.H), np.asarray(r.b), float(r.objective),
                    float(r.grad_norm), float(r.certificate), fallback)


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
