"""Figure `convergence`: gradient-flow trajectories, vmapped over random distributions.

Two flows with the same critical points (`mlnc_jax.engine.flow`): the equal-curvature flow (every
prototype moves at the same rate however rare its label set) and the Euclidean flow, the
UFM's own training dynamics (full-batch gradient descent). Relative Gram error to the MSE
closed form (THEORY §4) and objective gap against flow time (log-log) for `mse`; for `pal`,
the objective gap to the certified optimum and |ρ−1| (§3) against time. Each flow's end
point then starts the Newton engine (`solve_batch(init=...)`), whose certificate (§2c) says
whether the trajectory was heading to a global optimum: marked at the right.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from mlnc_jax import (
    UFMConfig,
    UFMParams,
    init_params,
    mse_closed_form,
    random_correlated,
)
from mlnc_jax.engine.flow import gradient_flow_batch

from ._common import (
    LOSS_COLORS,
    certified_note,
    finish,
    log_ticks_note,
    not_certified,
    solve_grid,
)

NAME = "convergence"
METRICS = {"": "equal_curvature", "euclidean_": "euclidean"}  # key prefix -> flow metric


@dataclass(frozen=True)
class Config:
    num_classes: int = 6
    max_multiplicity: int = 2
    num_distributions: int = 32
    dim: int = 8
    lambda_w: float = 5e-3
    lambda_h: float = 5e-3
    flow_steps: int = 20000
    tol: float = 1e-10
    first_seed: int = 0


FULL = Config()
QUICK = Config(num_distributions=32, flow_steps=2000)


def _stack(xs):
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *xs)


def _flows(loss, dists, cfg, cfs):
    """Both flows from the same seeded starts, then one certifying `solve_batch` call from
    all their end points. Returns `{prefix: (step_sizes, trace, end params)}` and the result."""
    config = UFMConfig(loss, cfg.dim, cfg.lambda_w, cfg.lambda_h)
    K, T = dists[0].num_classes, dists[0].num_sets
    start = _stack([init_params(jax.random.PRNGKey(cfg.first_seed + i), K, T, config, 0.1,
                                jnp.float64) for i in range(len(dists))])
    Y = jnp.stack([jnp.asarray(d.label_sets) for d in dists])
    w = jnp.stack([jnp.asarray(d.weights) for d in dists])
    ref = {"ref_gram_w": np.stack([cf.gram_W for cf in cfs]),
           "ref_gram_h": np.stack([cf.gram_H for cf in cfs]),
           "ref_params": _stack([jax.tree_util.tree_map(jnp.asarray, cf.params) for cf in cfs])}
    flows = {}
    for prefix, metric in METRICS.items():
        params, trace, steps = gradient_flow_batch(start, Y, w, config, num_steps=cfg.flow_steps,
                                                   metric=metric, **ref)
        flows[prefix] = (steps, trace, params)
    ends = [flows[p][2] for p in METRICS]
    init = UFMParams(*(np.concatenate([np.asarray(getattr(e, f)) for e in ends])
                       for f in ("W", "H", "b")))
    res = solve_grid(dists * len(METRICS), config, init=init, tol=cfg.tol)
    return flows, res


def compute(cfg: Config, progress=None):
    dists = [random_correlated(cfg.num_classes, cfg.first_seed + i,
                               max_multiplicity=cfg.max_multiplicity)
             for i in range(cfg.num_distributions)]
    cfs = [mse_closed_form(d, UFMConfig("mse", cfg.dim, cfg.lambda_w, cfg.lambda_h)) for d in dists]
    B = len(dists)
    out, bad = {}, []
    for loss in ("mse", "pal"):
        flows, res = _flows(loss, dists, cfg, cfs)
        for n, prefix in enumerate(METRICS):
            steps, tr, _ = flows[prefix]
            pre = f"{loss}_{prefix}"
            out[pre + "step_size"] = steps
            out[pre + "time"] = np.asarray(tr.time)
            out[pre + "objective"] = np.asarray(tr.objective)
            out[pre + "grad_norm"] = np.asarray(tr.grad_norm)
            out[pre + "gram_h_error"] = np.asarray(tr.gram_h_error)
            out[pre + "gram_w_error"] = np.asarray(tr.gram_w_error)
            out[pre + "certificate"] = np.asarray(tr.certificate)
            sl = slice(n * B, (n + 1) * B)
            out[pre + "final_objective"] = res.objective[sl]
            out[pre + "final_grad_norm"] = res.grad_norm[sl]
            out[pre + "final_certificate"] = res.certificate[sl]
            out[pre + "newton_steps"] = res.steps[sl]
            out[pre + "final_certified"] = res.certified[sl]
            out[pre + "final_status"] = res.status[sl].astype(str)
            out[pre + "final_gram_h_error"] = np.array([
                np.linalg.norm(H[:T] @ H[:T].T - cf.gram_H) / np.linalg.norm(cf.gram_H)
                for H, cf, T in zip(res.H[sl], cfs, (d.num_sets for d in dists))])
        bad += not_certified(res, loss, [f"end of the {m} flow, seed {cfg.first_seed + i}"
                                         for m in METRICS.values() for i in range(B)])
    out["mse_closed_form_objective"] = np.array([cf.objective for cf in cfs])
    info = {"seeds": list(range(cfg.first_seed, cfg.first_seed + cfg.num_distributions)),
            "metrics": {p or "(none)": m for p, m in METRICS.items()},
            "not_certified": bad,
            "distributions": f"random_correlated(K={cfg.num_classes}, seed, max_multiplicity={cfg.max_multiplicity})"}
    return out, info


def _band(ax, t, y, color, label, ls="-", faint=True):
    y = np.maximum(y, 1e-17)
    if faint:
        for i in range(t.shape[0]):
            ax.plot(t[i, 1:], y[i, 1:], color=color, alpha=0.15, lw=0.6, ls=ls)
    # median curve on the common grid of the first member's times (same record steps)
    ax.plot(np.median(t[:, 1:], 0), np.median(y[:, 1:], 0), color=color, lw=1.8, ls=ls, label=label)


def _newton(ax, t, y, color, marker, label):
    x = np.full(len(y), np.max(t) * 3)
    ax.axvline(np.max(t), color="0.5", ls=":", lw=0.8)
    ax.scatter(x, np.maximum(y, 1e-17), color=color, marker=marker, s=30, zorder=3, label=label)


def _ends(ax, a, loss, field, color, ref=None):
    """Newton from each flow's end point: ★ equal-curvature, ✕ Euclidean (right of the flows)."""
    t = np.concatenate([a[f"{loss}_time"], a[f"{loss}_euclidean_time"]], 1)
    for prefix, marker, what in (("", "*", "equal-curv."), ("euclidean_", "x", "Euclidean")):
        y = a[f"{loss}_{prefix}final_{field}"]
        y = np.abs(y - 1) if field == "certificate" else (y - ref if ref is not None else y)
        _newton(ax, t, y, color, marker, f"Newton from the {what} end")


def plot(a, meta):
    B = a["mse_time"].shape[0]
    ec = "#7f7f7f"  # Euclidean-flow medians
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.0))
    ax = axes[0]
    _band(ax, a["mse_time"], a["mse_gram_h_error"], LOSS_COLORS["mse"], "‖HHᵀ − H*H*ᵀ‖/‖H*H*ᵀ‖")
    _band(ax, a["mse_time"], a["mse_gram_w_error"], "#9467bd", "‖WWᵀ − W*W*ᵀ‖/‖W*W*ᵀ‖")
    _band(ax, a["mse_euclidean_time"], a["mse_euclidean_gram_h_error"], ec,
          "Euclidean flow: HHᵀ error (median)", ls="--", faint=False)
    _ends(ax, a, "mse", "gram_h_error", LOSS_COLORS["mse"])
    ax.set(xscale="log", yscale="log", xlabel="flow time t = steps × η", ylabel="relative Gram error",
           title=f"MSE: distance to the closed form (§4), {B} distributions")
    ax.legend(loc="lower left", fontsize=7)
    ax = axes[1]
    F_mse = a["mse_closed_form_objective"][:, None]
    F_pal = a["pal_final_objective"][:, None]
    _band(ax, a["mse_time"], a["mse_objective"] - F_mse, LOSS_COLORS["mse"], "mse: F − F* (closed form)")
    _band(ax, a["pal_time"], a["pal_objective"] - F_pal, LOSS_COLORS["pal"], "pal: F − F* (certified)")
    _band(ax, a["mse_euclidean_time"], a["mse_euclidean_objective"] - F_mse, LOSS_COLORS["mse"],
          "mse, Euclidean flow (median)", ls="--", faint=False)
    _band(ax, a["pal_euclidean_time"], a["pal_euclidean_objective"] - F_pal, LOSS_COLORS["pal"],
          "pal, Euclidean flow (median)", ls="--", faint=False)
    _ends(ax, a, "mse", "objective", LOSS_COLORS["mse"], ref=a["mse_closed_form_objective"])
    ax.set(xscale="log", yscale="log", xlabel="flow time t", ylabel="objective gap",
           title="objective gap")
    ax.legend(loc="lower left", fontsize=7)
    ax = axes[2]
    _band(ax, a["pal_time"], np.abs(a["pal_certificate"] - 1), LOSS_COLORS["pal"], "pal: |ρ − 1|")
    _band(ax, a["pal_euclidean_time"], np.abs(a["pal_euclidean_certificate"] - 1), ec,
          "pal, Euclidean flow: |ρ − 1| (median)", ls="--", faint=False)
    _ends(ax, a, "pal", "certificate", LOSS_COLORS["pal"])
    ax.set(xscale="log", yscale="log", xlabel="flow time t", ylabel="|ρ − 1|  (ρ = ‖G‖op/√(λWλH), §3)",
           title="pal: global-optimality certificate")
    ax.legend(loc="lower left", fontsize=7)
    rho = max(np.max(np.abs(a[f"pal_{p}final_certificate"] - 1)) for p in ("", "euclidean_"))
    gmax = max(np.max(a[f"{l}_{p}final_grad_norm"]) for l in ("mse", "pal") for p in ("", "euclidean_"))
    cert = np.concatenate([a[f"{l}_{p}final_certified"] for l in ("mse", "pal") for p in ("", "euclidean_")])
    steps = np.concatenate([a[f"{l}_{p}newton_steps"] for l in ("mse", "pal") for p in ("", "euclidean_")])
    log_ticks_note(ax, f"after Newton: max |ρ−1| = {rho:.1e}, max ‖∇F‖ = {gmax:.1e}\n"
                       f"{steps.min()}–{steps.max()} Newton steps; {certified_note(cert)}",
                   loc=(0.3, 0.85))
    gh = max(np.max(a[f"mse_{p}final_gram_h_error"]) for p in ("", "euclidean_"))
    log_ticks_note(axes[0], f"after Newton: max Gram error = {gh:.1e}", loc=(0.4, 0.9))
    cfg = meta["config"]
    return finish(fig, f"Gradient flows (explicit Euler, vmapped; solid: equal-curvature metric, dashed: "
                       f"Euclidean = the UFM's training dynamics),\nthen the Newton engine from their end "
                       f"points; random correlated K={cfg['num_classes']}, |S| ≤ {cfg['max_multiplicity']}, "
                       f"d={cfg['dim']}, λW=λH={cfg['lambda_w']:g}, {cfg['flow_steps']} steps", 9)
