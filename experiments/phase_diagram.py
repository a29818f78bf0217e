"""Figure `phase_diagram`: active rank of W against λ_Wλ_H.

MSE (THEORY §4): the rank is the number of label-covariance eigenvalues λ_j above
τ² = λ_Wλ_H, a staircase that drops at each eigenvalue; solver dots should sit on it. PAL:
solver ranks, with the collapse threshold of §3 (W = 0 beyond it).
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from mlnc_jax import UFMConfig, collapse_threshold, mse_closed_form, random_correlated
from mlnc_jax.io.real_labels import load_real

from ._common import (
    LOSS_COLORS,
    certified_note,
    finish,
    log_ticks_note,
    not_certified,
    solve_grid,
    verdicts,
)

NAME = "phase_diagram"


@dataclass(frozen=True)
class Config:
    synthetic_classes: int = 6
    synthetic_seed: int = 3
    synthetic_max_multiplicity: int = 3
    real: str = "emotions"
    grid_points: int = 25
    dim: int = 8
    rank_tol: float = 1e-5
    seed: int = 0
    tol: float = 1e-10


FULL = Config()
QUICK = Config(grid_points=6)


def _dists(cfg):
    return {
        f"random correlated (K={cfg.synthetic_classes}, |S| ≤ {cfg.synthetic_max_multiplicity}, seed {cfg.synthetic_seed})":
            random_correlated(cfg.synthetic_classes, cfg.synthetic_seed,
                              max_multiplicity=cfg.synthetic_max_multiplicity),
        f"{cfg.real} (real labels)": load_real(cfg.real),
    }


def _rank(W, tol):
    return int(np.sum(np.linalg.svd(np.asarray(W), compute_uv=False) > tol))


def compute(cfg: Config, progress=None):
    out, names, bad = {}, [], []
    for i, (name, dist) in enumerate(_dists(cfg).items()):
        names.append(name)
        eig = mse_closed_form(dist, UFMConfig("mse", cfg.dim, 1.0, 1.0)).eigenvalues
        thr = collapse_threshold(dist, "pal")
        lo = min(eig[eig > 1e-12].min(), thr) * 0.3
        hi = max(eig.max(), thr) * 3
        tau2 = np.geomspace(lo, hi, cfg.grid_points)
        lam = np.sqrt(tau2)
        for loss in ("mse", "pal"):  # the whole λ grid in one call
            res = solve_grid([dist] * lam.size, UFMConfig(loss, cfg.dim, 1.0, 1.0), seeds=cfg.seed,
                             lambda_w=lam, lambda_h=lam, tol=cfg.tol)
            out[f"d{i}_{loss}_rank"] = np.array([_rank(W, cfg.rank_tol) for W in res.W])
            out[f"d{i}_{loss}_certificate"] = res.certificate
            out[f"d{i}_{loss}_grad_norm"] = res.grad_norm
            out.update(verdicts(res, f"d{i}_{loss}_"))
            bad += not_certified(res, f"{name}, {loss}", [f"τ² = {t:.3g}" for t in tau2])
        out[f"d{i}_tau2"] = tau2
        out[f"d{i}_eigenvalues"] = eig
        out[f"d{i}_pal_threshold"] = np.asarray(thr)
        out[f"d{i}_mse_threshold"] = np.asarray(collapse_threshold(dist, "mse"))
        out[f"d{i}_closed_form_rank"] = np.asarray(
            [mse_closed_form(dist, UFMConfig("mse", cfg.dim, float(l), float(l))).rank for l in lam])
    return out, {"distributions": names, "seed": cfg.seed, "not_certified": bad}


def plot(a, meta):
    names = meta["distributions"]
    fig, axes = plt.subplots(1, len(names), figsize=(5.6 * len(names), 3.8))
    for i, (ax, name) in enumerate(zip(np.atleast_1d(axes), names)):
        tau2, eig = a[f"d{i}_tau2"], a[f"d{i}_eigenvalues"]
        grid = np.geomspace(tau2.min(), tau2.max(), 600)
        stair = np.array([(eig > g).sum() for g in grid])
        for e in eig[eig > tau2.min()]:
            ax.axvline(e, color="0.85", lw=0.8, zorder=0)
        ax.step(grid, stair, where="post", color=LOSS_COLORS["mse"], lw=1.6,
                label="MSE closed form: #{λj(C) > λWλH} (§4)")
        ax.plot(tau2, a[f"d{i}_mse_rank"], "o", ms=5, mfc="none", color=LOSS_COLORS["mse"],
                label="MSE solver")
        ax.plot(tau2, a[f"d{i}_pal_rank"] + 0.08, "s", ms=4, color=LOSS_COLORS["pal"],
                label="PAL solver (offset +0.08)")
        thr = float(a[f"d{i}_pal_threshold"])
        ax.axvline(thr, color=LOSS_COLORS["pal"], ls="--", lw=1.2,
                   label=f"PAL collapse threshold (§3) = {thr:.3g}")
        agree = np.mean(a[f"d{i}_mse_rank"] == a[f"d{i}_closed_form_rank"])
        beyond = tau2 > thr
        pal_ok = np.all(a[f"d{i}_pal_rank"][beyond] == 0) if beyond.any() else True
        cert = np.concatenate([a[f"d{i}_mse_certified"], a[f"d{i}_pal_certified"]])
        log_ticks_note(ax, f"MSE solver rank = closed form at {agree:.0%} of points\n"
                           f"PAL rank 0 beyond its threshold: {'yes' if pal_ok else 'NO'}\n"
                           f"{certified_note(cert)}",
                       loc=(0.02, 0.03))
        ax.set(xscale="log", xlabel="λW·λH (= τ²)", ylabel="numerical rank of W",
               title=name)
        ax.set_ylim(-0.3, max(eig.size, 1) + 0.5)
        ax.legend(loc="upper right", fontsize=7)
    return finish(fig, "Phase diagram: active directions of W (grey lines: eigenvalues of the label "
                       "covariance C)")
