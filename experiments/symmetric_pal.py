"""Figure `symmetric_pal`: the symmetric setting of Li et al. (2024), THEORY §5.

Every m-subset equally likely within its multiplicity. The scalar problem of §5 predicts
`ρ = ‖w_k‖²` and `α_m` (`h_S = α_m Σ_{k∈S} w_k`) as functions of λ = λ_W = λ_H; solver dots
(W, H from `solve`, ρ = mean ‖w_k‖², α_m by least squares over the sets of size m) should
sit on the curves, up to the collapse threshold where ρ drops to 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from mlnc_jax import UFMConfig, balanced
from mlnc_jax.theory.symmetric_pal import symmetric_pal

from ._common import (
    LOSS_COLORS,
    certified_note,
    finish,
    log_ticks_note,
    not_certified,
    solve_grid,
    verdicts,
)

NAME = "symmetric_pal"
MASS = {1: 0.5, 2: 0.3, 3: 0.2}


@dataclass(frozen=True)
class Config:
    num_classes: int = 5
    dim: int = 6
    curve_points: int = 200
    solver_points: int = 12
    lambda_min: float = 1e-3
    seed: int = 0
    tol: float = 1e-10


FULL = Config()
QUICK = Config(curve_points=60, solver_points=4)


def _fit(W, H, dist):
    W, H = np.asarray(W), np.asarray(H)
    rho = float(np.mean(np.sum(W**2, 1)))
    Y = np.asarray(dist.label_sets)
    m = Y.sum(1).round().astype(int)
    alpha = {}
    for mm in sorted(MASS):
        rows = np.flatnonzero(m == mm)
        S = Y[rows] @ W  # Σ_{k∈S} w_k
        den = np.sum(S * S)
        alpha[mm] = float(np.sum(H[rows] * S) / den) if den > 1e-300 else 0.0
    return rho, alpha


def compute(cfg: Config, progress=None):
    dist = balanced(cfg.num_classes, MASS)
    out, bad = {}, []
    for loss in ("pal", "pal_normalized"):
        base = UFMConfig(loss, cfg.dim, 1.0, 1.0)
        thr = symmetric_pal(dist, base).threshold
        lam_max = np.sqrt(thr) * 1.25
        curve = np.geomspace(cfg.lambda_min, lam_max, cfg.curve_points)
        pred = [symmetric_pal(dist, base._replace(lambda_w=l, lambda_h=l)) for l in curve]
        out[f"{loss}_lambda"] = curve
        out[f"{loss}_rho"] = np.array([p.rho for p in pred])
        out[f"{loss}_objective"] = np.array([p.objective for p in pred])
        for mm in MASS:  # α_m is undefined once ρ = 0 (collapse)
            out[f"{loss}_alpha{mm}"] = np.array([p.alpha[mm] if not p.collapsed else np.nan for p in pred])
        out[f"{loss}_threshold"] = np.asarray(thr)
        dots = np.geomspace(cfg.lambda_min * 1.3, lam_max * 0.97, cfg.solver_points)
        res = solve_grid([dist] * dots.size, base, seeds=cfg.seed, lambda_w=dots, lambda_h=dots,
                         tol=cfg.tol)
        srho, salpha, pobj = [], {m: [] for m in MASS}, []
        for j, l in enumerate(dots):
            r = res.item(j)
            rho, alpha = _fit(r.W, r.H, dist)
            srho.append(rho)
            for mm in MASS:
                salpha[mm].append(alpha[mm] if rho > 1e-10 else np.nan)
            pobj.append(symmetric_pal(dist, base._replace(lambda_w=float(l), lambda_h=float(l))).objective)
        out[f"{loss}_solver_lambda"] = dots
        out[f"{loss}_solver_rho"] = np.array(srho)
        for mm in MASS:
            out[f"{loss}_solver_alpha{mm}"] = np.array(salpha[mm])
        out[f"{loss}_solver_objective"] = res.objective
        out[f"{loss}_predicted_objective_at_solver"] = np.array(pobj)
        out[f"{loss}_solver_certificate"] = res.certificate
        out[f"{loss}_solver_grad_norm"] = res.grad_norm
        out.update(verdicts(res, f"{loss}_solver_"))
        bad += not_certified(res, loss, [f"λ = {l:.4g}" for l in dots])
    return out, {"distribution": f"balanced(K={cfg.num_classes}, {MASS})", "seed": cfg.seed,
                 "not_certified": bad}


def plot(a, meta):
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.6))
    marks = {1: "o", 2: "s", 3: "^"}
    shades = {1: 1.0, 2: 0.7, 3: 0.45}
    for row, loss in enumerate(("pal", "pal_normalized")):
        col = LOSS_COLORS[loss]
        lam, dots = a[f"{loss}_lambda"], a[f"{loss}_solver_lambda"]
        thr = float(a[f"{loss}_threshold"])
        ax = axes[row, 0]
        ax.plot(lam, a[f"{loss}_rho"], color=col, lw=1.6, label="scalar problem (§5)")
        ax.plot(dots, a[f"{loss}_solver_rho"], "o", mfc="none", color="k", ms=6, label="solver")
        ax.axvline(np.sqrt(thr), color="0.4", ls="--", lw=1, label=f"collapse: λ = √{thr:.3g}")
        ax.set(xscale="log", xlabel="λ = λW = λH", ylabel="ρ = ‖w_k‖²", title=f"{loss}: classifier norm")
        ax.legend(loc="upper right")
        rel = np.abs(a[f"{loss}_solver_objective"] - a[f"{loss}_predicted_objective_at_solver"]) / \
            np.abs(a[f"{loss}_predicted_objective_at_solver"])
        cert = a[f"{loss}_solver_certificate"]
        live = a[f"{loss}_solver_rho"] > 1e-10
        log_ticks_note(ax, f"objective, solver vs §5: max rel. gap {rel.max():.1e}\n"
                           f"certificate (§3): max |ρcert − 1| = {np.max(np.abs(cert[live] - 1)):.1e}\n"
                           f"ρcert ≤ 1 where collapsed: {'yes' if np.all(cert[~live] <= 1 + 1e-9) else 'NO'}")
        ax = axes[row, 1]
        for mm in (1, 2, 3):
            ax.plot(lam, a[f"{loss}_alpha{mm}"], color=col, alpha=shades[mm], lw=1.6,
                    label=f"α_{mm} (§5)")
            ax.plot(dots, a[f"{loss}_solver_alpha{mm}"], marks[mm], mfc="none", color="k", ms=6,
                    label=f"solver, |S| = {mm}")
        ax.axvline(np.sqrt(thr), color="0.4", ls="--", lw=1)
        ax.set(xscale="log", xlabel="λ = λW = λH", ylabel="α_m  (h_S = α_m Σ_{k∈S} w_k)",
               title=f"{loss}: tag-wise averaging coefficients")
        ax.legend(loc="lower left", ncol=2, fontsize=7)
    cert = np.concatenate([a[f"{loss}_solver_certified"] for loss in ("pal", "pal_normalized")])
    return finish(fig, f"Symmetric setting of Li et al. (2024): {meta['distribution']}, "
                       f"d = {meta['config']['dim']}; solver dots: {certified_note(cert)}")
