"""Figure `kappa_stability`: the weakest label contrast κ_m (THEORY §1) against the smallest
separation of the learned geometry along contrasts (σ_m, `mlnc_jax.analysis.geometry`).

Family: K classes, multiplicities {1, 2}, balanced singletons; a fraction q of the pair mass
sits on the pair {0, 1} and the rest is spread evenly over the other pairs. From q = 1/C(K,2)
(balanced) to q → 1 the two classes co-occur more and more often and
`κ_2 = λ_min(C_2|_{1^⊥})` falls towards 0 (κ_1 stays m(K−m)/(K(K−1)) at m = 1).

Per family member: σ_2 = λ_min(Cov_2(z)|_{1^⊥}) of the logits z_s = W h_s + b, the ratio
σ_2/κ_2, and the smallest non-zero singular value of the centred prototype matrix (rows
unweighted and rows × √π_s). MSE closed form (§4) on a fine grid as curves, with its lower
bound σ_2 ≥ κ_2 · s_min(P B|_{1^⊥})², B = Σ_j φ_j u_j u_jᵀ (geometry docstring); MSE solver
dots on the curves; PAL solver dots as a second series (no closed form).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from mlnc_jax import UFMConfig, mse_closed_form
from mlnc_jax.analysis.geometry import (
    centred_singular_values,
    geometry_stability,
    mse_contrast_shrinkage,
)
from mlnc_jax.model.labels import LabelDistribution

from ._common import (
    LOSS_COLORS,
    certified_note,
    finish,
    log_ticks_note,
    not_certified,
    solve_grid,
    verdicts,
)

NAME = "kappa_stability"
M = 2  # the multiplicity whose κ_m the family drives to 0


@dataclass(frozen=True)
class Config:
    num_classes: int = 6
    singleton_mass: float = 0.6
    min_gap: float = 1e-3          # q runs to 1 − (1 − q_balanced)·min_gap
    curve_points: int = 200
    solver_points: int = 10
    dim: int = 8
    lambda_w: float = 5e-3
    lambda_h: float = 5e-3
    rank_rtol: float = 1e-5        # singular values below rtol·s_max count as zero
    seed: int = 0
    tol: float = 1e-10


FULL = Config()
QUICK = Config(curve_points=80, solver_points=4)


def family(cfg, gap):
    """Distribution with pair-mass fraction q = 1 − (1 − q₀)·gap on {0, 1}, q₀ = 1/C(K,2)."""
    K = cfg.num_classes
    pairs = list(itertools.combinations(range(K), 2))
    q0 = 1.0 / len(pairs)
    q = 1.0 - (1.0 - q0) * gap
    rest = (1.0 - q) / (len(pairs) - 1)
    sets = [(k,) for k in range(K)] + pairs
    m2 = 1.0 - cfg.singleton_mass
    w = [cfg.singleton_mass / K] * K + [m2 * (q if S == (0, 1) else rest) for S in pairs]
    return LabelDistribution.from_sets(sets, w, K), q


def _smin(H, w, rtol, weighted):
    return float(centred_singular_values(jnp.asarray(H), jnp.asarray(w), weighted=weighted,
                                         rtol=rtol)[1])


def _measures(W, H, b, dist, rtol):
    g = geometry_stability(W, H, b, dist)
    w = np.asarray(dist.weights)
    return {"kappa": g.kappa[M], "kappa1": g.kappa[1], "kappa_all": g.kappa_all,
            "sigma": g.contrast_separation[M], "sigma1": g.contrast_separation[1],
            "sigma_all": g.contrast_separation_all,
            "smin": _smin(H, w, rtol, False), "smin_weighted": _smin(H, w, rtol, True),
            "min_pair": g.min_pair_separation}


def _lower_bound(cf, config, K):
    """κ_2 · s_min(P B |_{1^⊥})², B = Σ_j φ_j u_j u_jᵀ (geometry module docstring)."""
    return mse_contrast_shrinkage(cf.eigenvalues, cf.eigenvectors, config.tau)


def compute(cfg: Config, progress=None):
    K = cfg.num_classes
    config = UFMConfig("mse", cfg.dim, cfg.lambda_w, cfg.lambda_h)
    out = {}
    gaps = np.geomspace(1.0, cfg.min_gap, cfg.curve_points)
    rows, q = [], []
    for gap in gaps:
        dist, qq = family(cfg, gap)
        cf = mse_closed_form(dist, config)
        P = cf.params
        r = _measures(P.W, P.H, P.b, dist, cfg.rank_rtol)
        r["bound"] = r["kappa"] * _lower_bound(cf, config, K)
        rows.append(r)
        q.append(qq)
    out["curve_q"] = np.asarray(q)
    for k in rows[0]:
        out[f"curve_{k}"] = np.array([r[k] for r in rows])
    dots = np.geomspace(1.0, cfg.min_gap, cfg.solver_points)
    dot_dists = [family(cfg, gap)[0] for gap in dots]
    bad = []
    for loss in ("mse", "pal"):  # the family in one call per loss
        res = solve_grid(dot_dists, config._replace(loss=loss), seeds=cfg.seed, tol=cfg.tol)
        sols = [res.item(j) for j in range(len(dot_dists))]
        rows = [_measures(s.W, s.H, s.b, dist, cfg.rank_rtol) for s, dist in zip(sols, dot_dists)]
        for k in rows[0]:
            out[f"{loss}_{k}"] = np.array([r[k] for r in rows])
        out[f"{loss}_grad_norm"] = res.grad_norm
        out[f"{loss}_certificate"] = res.certificate
        out.update(verdicts(res, f"{loss}_"))
        bad += not_certified(res, loss, [f"gap {g:.3g}" for g in dots])
        if loss == "mse":
            Gs = [mse_closed_form(dist, config).gram_H for dist in dot_dists]
            out["mse_gram_error"] = np.array([np.linalg.norm(s.H @ s.H.T - G) / np.linalg.norm(G)
                                              for s, G in zip(sols, Gs)])
    info = {"multiplicity": M, "seed": cfg.seed, "not_certified": bad,
            "distributions": f"K={K}, |S| ∈ {{1, 2}}, π(1) = {cfg.singleton_mass}, singletons "
                             f"uniform; pair {{0,1}} has fraction q of the pair mass, others uniform"}
    return out, info


def _slope(x, y):
    ok = (x > 0) & (y > 0)
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def _legend_below(ax):
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=7)


def _separation_panel(ax, a, m):
    cm, cp = LOSS_COLORS["mse"], LOSS_COLORS["pal"]
    kc = a["curve_kappa"]
    gap = a["curve_sigma"] / a["curve_bound"] - 1
    ax.plot(kc, a["curve_sigma"], color=cm, lw=1.8, label=f"MSE closed form (§4): σ_{m}")
    ax.plot(kc, a["curve_bound"], color=cm, lw=1.0, ls="--",
            label=f"lower bound κ_{m}·s_min(PB|1⊥)² (on the curve)")
    ax.plot(kc, kc, color="0.6", lw=0.8, ls=":", label=f"σ_{m} = κ_{m}")
    ax.plot(a["mse_kappa"], a["mse_sigma"], "o", mfc="none", mec="k", ms=7, label="MSE solver")
    ax.plot(a["pal_kappa"], a["pal_sigma"], "s", color=cp, ms=5, label="PAL solver")
    ax.set(xscale="log", yscale="log", xlabel=f"κ_{m} = λ_min(C_{m}|1⊥)  (label contrast variance, m = {m})",
           ylabel=f"σ_{m} = λ_min(Cov_{m}(z)|1⊥)  (logits z)",
           title="weakest logit contrast vs weakest label contrast")
    _legend_below(ax)
    log_ticks_note(ax, f"log-log slope σ_{m} vs κ_{m}: MSE {_slope(kc, a['curve_sigma']):.3f}, "
                       f"PAL {_slope(a['pal_kappa'], a['pal_sigma']):.3f}\n"
                       f"MSE solver vs closed form: max rel. Gram error {np.max(a['mse_gram_error']):.1e}\n"
                       f"closed form vs lower bound: σ_{m}/bound − 1 ∈ [{gap.min():.1e}, {gap.max():.1e}]",
                   loc=(0.33, 0.03))


def _shrinkage_panel(ax, a, m):
    cm, cp = LOSS_COLORS["mse"], LOSS_COLORS["pal"]
    kc = a["curve_kappa"]
    ax.plot(kc, a["curve_sigma"] / kc, color=cm, lw=1.8, label=f"MSE closed form: σ_{m}/κ_{m}")
    ax.plot(kc, a["curve_bound"] / kc, color=cm, lw=1.0, ls="--", label="lower bound s_min(PB|1⊥)² (on the curve)")
    ax.plot(a["mse_kappa"], a["mse_sigma"] / a["mse_kappa"], "o", mfc="none", mec="k", ms=7,
            label="MSE solver")
    ax.plot(a["pal_kappa"], a["pal_sigma"] / a["pal_kappa"], "s", color=cp, ms=5, label="PAL solver")
    ax.set(xscale="log", yscale="log", xlabel=f"κ_{m}", ylabel=f"σ_{m} / κ_{m}",
           title="shrinkage of the weakest contrast")
    _legend_below(ax)
    r_m, r_p = a["curve_sigma"] / kc, a["pal_sigma"] / a["pal_kappa"]
    log_ticks_note(ax, f"MSE: σ_{m}/κ_{m} ∈ [{r_m.min():.4f}, {r_m.max():.4f}]\n"
                       f"PAL: σ_{m}/κ_{m} ∈ [{r_p.min():.1f}, {r_p.max():.1f}]", loc=(0.3, 0.3))


def _spread_panel(ax, a, m):
    cm, cp = LOSS_COLORS["mse"], LOSS_COLORS["pal"]
    kc = a["curve_kappa"]
    ax.plot(kc, a["curve_smin"], color=cm, lw=1.8, label="MSE closed form, rows unweighted")
    ax.plot(kc, a["curve_smin_weighted"], color=cm, lw=1.2, ls="--", label="MSE closed form, rows × √π_s")
    ax.plot(a["mse_kappa"], a["mse_smin"], "o", mfc="none", mec="k", ms=7, label="MSE solver")
    ax.plot(a["mse_kappa"], a["mse_smin_weighted"], "o", mfc="none", mec="k", ms=7)
    ax.plot(a["pal_kappa"], a["pal_smin"], "s", color=cp, ms=5, label="PAL solver, unweighted")
    ax.plot(a["pal_kappa"], a["pal_smin_weighted"], "s", mfc="none", mec=cp, ms=5,
            label="PAL solver, × √π_s")
    ax.set(xscale="log", yscale="log", xlabel=f"κ_{m}", ylim=(0.1, 100),
           ylabel="smallest non-zero singular value of [h_s − h̄]_s",
           title="prototype spread (centred, π-weighted mean h̄)")
    _legend_below(ax)
    log_ticks_note(ax, f"unweighted, over the family: MSE {a['curve_smin'].min():.2f}–{a['curve_smin'].max():.2f},"
                       f" PAL {a['pal_smin'].min():.2f}–{a['pal_smin'].max():.2f}\n"
                       f"× √π_s: log-log slope vs κ_{m}: MSE {_slope(kc, a['curve_smin_weighted']):.2f}, "
                       f"PAL {_slope(a['pal_kappa'], a['pal_smin_weighted']):.2f}", loc=(0.02, 0.8))


def _title(a, meta):
    cfg = meta["config"]
    gmax = max(np.max(a["mse_grad_norm"]), np.max(a["pal_grad_norm"]))
    cert = max(np.max(np.abs(a["mse_certificate"] - 1)), np.max(np.abs(a["pal_certificate"] - 1)))
    return (f"κ_m vs stability of the learned geometry: {meta['distributions']}; q from "
            f"{a['curve_q'].min():.3f} (balanced) to {a['curve_q'].max():.4f}\n"
            f"d = {cfg['dim']}, λW = λH = {cfg['lambda_w']:g}; κ_1 = {a['curve_kappa1'][0]:.4f} fixed, "
            f"κ (all sets) {a['curve_kappa_all'].max():.3f} → {a['curve_kappa_all'].min():.3f}; "
            f"solver ‖∇F‖ ≤ {gmax:.0e}, |ρ−1| ≤ {cert:.0e}; "
            f"{certified_note(np.concatenate([a['mse_certified'], a['pal_certified']]))}")


def plot(a, meta):
    fig, axes = plt.subplots(1, 3, figsize=(14, 5.2))
    for ax, panel in zip(axes, (_separation_panel, _shrinkage_panel, _spread_panel)):
        panel(ax, a, meta["multiplicity"])
    return finish(fig, _title(a, meta))
