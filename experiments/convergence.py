"""Figure `convergence`: gradient-flow trajectories, vmapped over random distributions.

Relative Gram error to the MSE closed form (THEORY §4) and objective gap against flow time
(log-log) for `mse`; for `pal`, the objective gap to the polished optimum and |ρ−1| (§3)
against time. The L-BFGS polish that follows the flow is marked at the right.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from mlnc_jax import UFMConfig, init_params, mse_closed_form, random_correlated
from mlnc_jax.solvers import gradient_flow_batch, lbfgs, _summary, split_config

from ._common import LOSS_COLORS, log_ticks_note

NAME = "convergence"


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


def _run(loss, dists, cfg, cfs):
    config = UFMConfig(loss, cfg.dim, cfg.lambda_w, cfg.lambda_h)
    K, T = dists[0].num_classes, dists[0].num_sets
    inits = [init_params(jax.random.PRNGKey(cfg.first_seed + i), K, T, config, 0.1, jnp.float64)
             for i in range(len(dists))]
    stack = lambda xs: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *xs)
    Y = jnp.stack([jnp.asarray(d.label_sets) for d in dists])
    w = jnp.stack([jnp.asarray(d.weights) for d in dists])
    params, trace, steps = gradient_flow_batch(
        stack(inits), Y, w, config, num_steps=cfg.flow_steps,
        ref_gram_w=np.stack([cf.gram_W for cf in cfs]), ref_gram_h=np.stack([cf.gram_H for cf in cfs]),
        ref_params=stack([jax.tree_util.tree_map(jnp.asarray, cf.params) for cf in cfs]))
    final = []
    for i, d in enumerate(dists):
        p_i = jax.tree_util.tree_map(lambda a: a[i], params)
        polished, iters = lbfgs(p_i, d, config, tol=cfg.tol)
        val, gnorm, rho = _summary(polished, jnp.asarray(d.label_sets), jnp.asarray(d.weights),
                                   *split_config(config))
        H = np.asarray(polished.H)
        gh = np.linalg.norm(H @ H.T - cfs[i].gram_H) / np.linalg.norm(cfs[i].gram_H)
        final.append((float(val), float(gnorm), float(rho), iters, gh))
    return steps, trace, np.array(final)


def compute(cfg: Config, progress=None):
    dists = [random_correlated(cfg.num_classes, cfg.first_seed + i,
                               max_multiplicity=cfg.max_multiplicity)
             for i in range(cfg.num_distributions)]
    cfs = [mse_closed_form(d, UFMConfig("mse", cfg.dim, cfg.lambda_w, cfg.lambda_h)) for d in dists]
    out = {}
    for loss in ("mse", "pal"):
        steps, tr, final = _run(loss, dists, cfg, cfs)
        out[f"{loss}_step_size"] = steps
        out[f"{loss}_time"] = np.asarray(tr.time)
        out[f"{loss}_objective"] = np.asarray(tr.objective)
        out[f"{loss}_grad_norm"] = np.asarray(tr.grad_norm)
        out[f"{loss}_gram_h_error"] = np.asarray(tr.gram_h_error)
        out[f"{loss}_gram_w_error"] = np.asarray(tr.gram_w_error)
        out[f"{loss}_certificate"] = np.asarray(tr.certificate)
        out[f"{loss}_final_objective"] = final[:, 0]
        out[f"{loss}_final_grad_norm"] = final[:, 1]
        out[f"{loss}_final_certificate"] = final[:, 2]
        out[f"{loss}_polish_iterations"] = final[:, 3]
        out[f"{loss}_final_gram_h_error"] = final[:, 4]
    out["mse_closed_form_objective"] = np.array([cf.objective for cf in cfs])
    info = {"seeds": list(range(cfg.first_seed, cfg.first_seed + cfg.num_distributions)),
            "distributions": f"random_correlated(K={cfg.num_classes}, seed, max_multiplicity={cfg.max_multiplicity})"}
    return out, info


def _band(ax, t, y, color, label):
    y = np.maximum(y, 1e-17)
    for i in range(t.shape[0]):
        ax.plot(t[i, 1:], y[i, 1:], color=color, alpha=0.18, lw=0.7)
    # median curve on the common grid of the first member's times (same record steps)
    ax.plot(np.median(t[:, 1:], 0), np.median(y[:, 1:], 0), color=color, lw=1.8, label=label)


def _polish(ax, t, y, color):
    x = np.full(len(y), np.max(t) * 3)
    ax.axvline(np.max(t), color="0.5", ls=":", lw=0.8)
    ax.scatter(x, np.maximum(y, 1e-17), color=color, marker="*", s=30, zorder=3,
               label="after L-BFGS polish")


def plot(a, meta):
    B = a["mse_time"].shape[0]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    ax = axes[0]
    _band(ax, a["mse_time"], a["mse_gram_h_error"], LOSS_COLORS["mse"], "‖HHᵀ − H*H*ᵀ‖/‖H*H*ᵀ‖")
    _band(ax, a["mse_time"], a["mse_gram_w_error"], "#9467bd", "‖WWᵀ − W*W*ᵀ‖/‖W*W*ᵀ‖")
    _polish(ax, a["mse_time"], a["mse_final_gram_h_error"], LOSS_COLORS["mse"])
    ax.set(xscale="log", yscale="log", xlabel="flow time t = steps × η", ylabel="relative Gram error",
           title=f"MSE: distance to the closed form (§4), {B} distributions")
    ax.legend(loc="lower left")
    ax = axes[1]
    gap = a["mse_objective"] - a["mse_closed_form_objective"][:, None]
    _band(ax, a["mse_time"], gap, LOSS_COLORS["mse"], "mse: F − F* (closed form)")
    gap_pal = a["pal_objective"] - a["pal_final_objective"][:, None]
    _band(ax, a["pal_time"], gap_pal, LOSS_COLORS["pal"], "pal: F − F(polished)")
    _polish(ax, a["mse_time"], a["mse_final_objective"] - a["mse_closed_form_objective"], LOSS_COLORS["mse"])
    ax.set(xscale="log", yscale="log", xlabel="flow time t", ylabel="objective gap",
           title="objective gap")
    ax.legend(loc="lower left")
    ax = axes[2]
    _band(ax, a["pal_time"], np.abs(a["pal_certificate"] - 1), LOSS_COLORS["pal"], "pal: |ρ − 1|")
    _polish(ax, a["pal_time"], np.abs(a["pal_final_certificate"] - 1), LOSS_COLORS["pal"])
    ax.set(xscale="log", yscale="log", xlabel="flow time t", ylabel="|ρ − 1|  (ρ = ‖G‖op/√(λWλH), §3)",
           title="pal: global-optimality certificate")
    ax.legend(loc="lower left")
    log_ticks_note(ax, f"after polish: max |ρ−1| = {np.max(np.abs(a['pal_final_certificate'] - 1)):.1e}\n"
                       f"max ‖∇F‖ = {np.max(a['pal_final_grad_norm']):.1e}", loc=(0.45, 0.75))
    log_ticks_note(axes[0], f"after polish: max Gram error = {np.max(a['mse_final_gram_h_error']):.1e}",
                   loc=(0.4, 0.85))
    cfg = meta["config"]
    fig.suptitle(f"Gradient flow (explicit Euler, vmapped) then L-BFGS; random correlated K={cfg['num_classes']}, "
                 f"|S| ≤ {cfg['max_multiplicity']}, d={cfg['dim']}, λW=λH={cfg['lambda_w']:g}", fontsize=10)
    fig.tight_layout()
    return fig
