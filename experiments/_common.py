"""What every figure script shares: the results-file contract and the figure style.

A figure module defines `NAME`, a frozen dataclass `Config`, `QUICK` and `FULL` instances,
`compute(cfg, progress) -> (arrays, info)` and `plot(arrays, meta, path_base)`.
`run_experiment` writes `results/NAME.npz` + `results/NAME.json` (config, seeds, versions,
device, dtype, wall time, and `not_certified`: the solves without a certificate, with their
status and reason) and plots from the files it just wrote, never from memory. Every grid of
solves goes through one `solve_batch` call (`solve_grid`).
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from mlnc_jax import UFMConfig, UFMParams, solve_batch
from mlnc_jax.app.plotting import LOSS_COLORS, apply_style, savefig  # noqa: F401
from mlnc_jax.engine.placement import bucket_rows
from mlnc_jax.io.results import run_metadata, write_npz_atomic

SLOTS = 16  # problems side by side per device on CPU: `solve_batch`'s default there


def _row_bucket(dist) -> int:
    """The engine's row bucket for `dist`: distinct label sets of positive weight, rounded."""
    Y, w = np.asarray(dist.label_sets), np.asarray(dist.weights)
    return bucket_rows(np.unique(Y[w > 0], axis=0).shape[0])


def _fill(dists, slots: int) -> np.ndarray:
    """Indices of the problems to solve: `0..B-1`, then repeats of a bucket's own problems
    until every row bucket fills `slots` slots."""
    by = {}
    for i, d in enumerate(dists):
        by.setdefault(_row_bucket(d), []).append(i)
    extra = [m[j % len(m)] for m in by.values() if len(m) < slots for j in range(slots - len(m))]
    return np.concatenate([np.arange(len(dists)), np.asarray(extra, dtype=int)])


def solve_grid(distributions, config: UFMConfig, *, seeds=0, lambda_w=None, lambda_h=None,
               tol: float = 1e-10, init=None, max_steps: int = 500):
    """One `solve_batch` call for a whole panel or grid (no per-problem Python loop).

    Returns the batched `SolveResult`; every problem carries its own verdict (`certified`,
    `status`, `reason`), which the figure scripts store next to their numbers. Nothing is
    retried or replaced: only problems with `certified` may be called global optima.

    The engine compiles one program per (loss, K, d, row bucket, slot count) and gives a
    bucket of `n` problems `min(16, 2^⌈log₂ n⌉)` slots on a CPU device; compiling costs far
    more than these small solves, so on a single CPU device a bucket with fewer than 16
    problems is filled up with repeats of its own problems (dropped from the result) and
    every figure's grid runs in the same 16-slot programs.
    """
    dists = list(distributions)
    B = len(dists)
    devices = jax.devices()
    pick = _fill(dists, SLOTS) if devices[0].platform == "cpu" and len(devices) == 1 \
        else np.arange(B)
    per = lambda v: None if v is None else np.broadcast_to(np.asarray(v), (B,))[pick]
    if isinstance(init, UFMParams):
        init = UFMParams(*(np.asarray(a)[pick] for a in init))
    elif isinstance(init, (list, tuple)):
        init = [init[i] for i in pick]
    res = solve_batch([dists[i] for i in pick], config, seeds=per(seeds), tol=tol,
                      lambda_w=per(lambda_w), lambda_h=per(lambda_h), init=init,
                      max_steps=max_steps, progress=False, warn=False)
    return res._replace(**{f: getattr(res, f)[:B] for f in res._fields})


def verdicts(res, prefix: str) -> dict:
    """Results-file arrays of a batched result's verdicts: `{prefix}certified` (bool) and
    `{prefix}status` (strings, one of `mlnc_jax.STATUSES`)."""
    return {f"{prefix}certified": np.asarray(res.certified, dtype=bool),
            f"{prefix}status": np.asarray(res.status, dtype=str)}


def not_certified(res, what: str, labels=None) -> list:
    """Lines naming the problems of `res` that are not certified (empty when all are);
    `labels[i]` names problem `i` (default: its index)."""
    return [f"{what} {labels[i] if labels is not None else f'#{i}'}: {res.status[i]} "
            f"({res.reason[i]})" for i in np.flatnonzero(~np.asarray(res.certified))]


def certified_note(certified) -> str:
    """The figure's wording: global optima only when every solve behind it is certified."""
    c = np.asarray(certified, dtype=bool).ravel()
    if c.all():
        return f"all {c.size} solves certified global optima (§3)"
    return f"{int((~c).sum())} of {c.size} solves NOT certified (not claimed optimal)"


def results_paths(results_dir, name):
    d = Path(results_dir)
    return d / f"{name}.npz", d / f"{name}.json"


def run_experiment(module, *, quick: bool, results_dir, figures_dir, progress=None) -> dict:
    jax.config.update("jax_enable_x64", True)  # results files are float64
    cfg = module.QUICK if quick else module.FULL
    results_dir, figures_dir = Path(results_dir), Path(figures_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    arrays, info = module.compute(cfg, progress)
    wall = time.perf_counter() - t0
    info.setdefault("not_certified", [])
    if info["not_certified"]:
        warnings.warn(f"{module.NAME}: {len(info['not_certified'])} solve(s) not certified: "
                      + "; ".join(info["not_certified"][:5]), RuntimeWarning, stacklevel=2)
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


NOTE_BOX = {"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.8", "alpha": 0.9}


def note(ax, text, loc=(0.02, 0.02), fontsize=7, **kw):
    """A boxed note at `loc` in axes coordinates, readable over lines and images."""
    ax.text(*loc, text, transform=ax.transAxes, fontsize=fontsize, bbox=NOTE_BOX, **kw)


def log_ticks_note(ax, text, loc=(0.02, 0.02)):
    note(ax, text, loc, va="bottom", ha="left")


def gram_image(ax, G, vmax, **kw):
    """A Gram matrix on a diverging scale centred at 0 (no grid over the cells)."""
    im = ax.imshow(G, cmap="RdBu_r", vmin=-vmax, vmax=vmax, **kw)
    ax.grid(False)
    return im


def finish(fig, title, fontsize=10, **layout):
    """The figure with its title and a tight layout (`layout`: `tight_layout`'s options)."""
    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout(**layout)
    return fig
