"""Figure `inverse_design`: loss weights that restore a balanced geometry (THEORY §5, §8).

An imbalanced distribution (K = 4 classes, singletons `{0}`, `{1}` ten times as frequent as
`{2}`, `{3}`, every pair equally likely; `singleton_imbalance`), PAL, d = K, free bias. The
balanced distribution's certified classifier is a simplex ETF (§5); imbalance distorts it.
Per-label-set loss weights `c_s` (a re-weighted PAL, `Σ_s π_s c_s ℓ(z_s, y_s) + λ_H/2 Σ_s
π_s‖h_s‖² + …`, normalised to `Σ_s π_s c_s = 1`) are found by gradient descent on the
distance of `W Wᵀ` to a simplex ETF, `‖W Wᵀ/‖W Wᵀ‖ − P/‖P‖‖²`, with gradients of the
certified optimum (`mlnc_jax.optimum(..., loss_weights=c)`, implicit differentiation).

Compared with the fixed formulas: inverse label-set frequency (`c_s ∝ 1/π_s`), inverse class
frequency (`c_s ∝ mean_{k∈S} 1/p_k`) and logit adjustment (`ℓ(z + τ log p, y)`, τ = 1; with a
free bias it is absorbed by `b` exactly, so it leaves `W Wᵀ` and `H Hᵀ` unchanged).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import mlnc_jax as mj
from mlnc_jax.analysis.metrics import simplex_etf_distance, tagwise_residuals

from ._common import finish

NAME = "inverse_design"


@dataclass(frozen=True)
class Config:
    num_classes: int = 4
    ratio: float = 10.0
    singleton_mass: float = 0.7
    lambda_w: float = 5e-3
    lambda_h: float = 5e-3
    steps: int = 40
    lr: float = 0.5          # first step length in log c
    tau: float = 1.0
    seed: int = 0
    tol: float = 1e-12


FULL = Config()
QUICK = Config(steps=2)


def _dist(cfg):
    return mj.singleton_imbalance(cfg.num_classes, cfg.ratio,
                                  multiplicity_mass={1: cfg.singleton_mass,
                                                     2: 1 - cfg.singleton_mass})


def _norm_weights(c, pi):
    return c / jnp.sum(pi * c)


def _scores(gram_W, gram_H, Y):
    r = tagwise_residuals(gram_H, Y)[0]
    d = jnp.sqrt(jnp.diag(gram_W))
    return jnp.stack([simplex_etf_distance(gram_W), jnp.sqrt(jnp.mean(r * r)),
                      jnp.max(d) / jnp.min(d)])


def compute(cfg: Config, progress=None):
    with jax.enable_x64(True):  # derivatives of the optimum need float64
        return _compute(cfg)


def _objective(dist, config, cfg):
    """Jitted (value and gradient in log c of the ETF distance, every score at weights c)."""
    pi, Y = jnp.asarray(dist.weights), np.asarray(dist.label_sets)

    def evaluate(c):
        o = mj.optimum(dist, config, loss_weights=_norm_weights(c, pi), seed=cfg.seed,
                       tol=cfg.tol)
        return _scores(o.gram_W, o.gram_H, Y)

    def loss_of(a):
        return evaluate(jnp.exp(a))[0]

    return jax.jit(jax.value_and_grad(loss_of)), jax.jit(evaluate)


def _descend(vg, a, cfg):
    """(end point, objective per step, solves) of gradient descent in log c from `a`."""
    hist = []
    J, g = vg(a)
    solves = 1
    lr = cfg.lr
    for _ in range(cfg.steps):
        hist.append(float(J))
        while True:  # normalised gradient steps in log c, halved on increase (or failure)
            a1 = a - lr * g / jnp.linalg.norm(g)
            solves += 1
            try:
                J1, g1 = vg(a1)
            # a step into a non-certifiable region, whatever the solve raised: shorter step
            except Exception:  # noqa: BLE001
                J1 = jnp.inf
            if J1 <= J or lr < 1e-6:
                break
            lr *= 0.5
        if not J1 <= J:
            break
        a, J, g = a1, J1, g1
        lr *= 1.5
    hist.append(float(J))
    return a, hist, solves


def _logit_adjusted(dist, config, cfg):
    """Scores of a user loss ℓ(z + τ log p, y), certified solve."""
    shift = jnp.asarray(cfg.tau * np.log(np.asarray(dist.class_frequencies)))
    la = mj.Loss.from_function("pal_logit_adjusted",
                               lambda z, y: mj.pal(z + shift, y),
                               ignored_directions=mj.pal.ignored_directions)
    r = mj.solve(dist, config._replace(loss=la), seed=cfg.seed, tol=1e-10)
    assert r.certified, r.reason
    return np.asarray(_scores(jnp.asarray(r.W @ r.W.T), jnp.asarray(r.H @ r.H.T),
                              np.asarray(dist.label_sets)))


def _compute(cfg: Config):
    dist = _dist(cfg)
    K, Y = dist.num_classes, np.asarray(dist.label_sets)
    pi = jnp.asarray(dist.weights)
    p = np.asarray(dist.class_frequencies)
    config = mj.UFMConfig("pal", K, cfg.lambda_w, cfg.lambda_h)
    vg, ev = _objective(dist, config, cfg)
    a = jnp.zeros(dist.num_sets)
    t0 = time.perf_counter()
    a, hist, solves = _descend(vg, a, cfg)
    seconds = time.perf_counter() - t0
    c_learn = np.asarray(_norm_weights(jnp.exp(a), pi))

    inv_set = np.asarray(_norm_weights(1.0 / pi, pi))
    inv_cls = np.asarray(_norm_weights(jnp.asarray((Y / p).sum(1) / Y.sum(1)), pi))
    rows = {"none": np.asarray(ev(jnp.ones(dist.num_sets))), "inverse_set_frequency": np.asarray(ev(jnp.asarray(inv_set))),
            "inverse_class_frequency": np.asarray(ev(jnp.asarray(inv_cls))),
            "learned": np.asarray(ev(jnp.asarray(c_learn))),
            "logit_adjustment": _logit_adjusted(dist, config, cfg)}
    out = {"history": np.asarray(hist), "weights": np.asarray(pi), "multiplicity": dist.multiplicities,
           "c_learned": c_learn, "c_inverse_set": inv_set, "c_inverse_class": inv_cls,
           "methods": np.asarray(list(rows)), "scores": np.stack(list(rows.values())),
           "solves": np.asarray(solves), "seconds": np.asarray(seconds)}
    info = {"sets": ["{" + ",".join(map(str, S)) + "}" for S in dist.sets], "seed": cfg.seed}
    return out, info


LABELS = {"none": "no re-weighting", "inverse_set_frequency": "inverse set frequency 1/π_s",
          "inverse_class_frequency": "inverse class frequency", "logit_adjustment": "logit adjustment τ log p",
          "learned": "learned (gradient descent)"}


def plot(a, meta):
    cfg = meta["config"]
    methods = [str(m) for m in a["methods"]]
    S = a["scores"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    ax = axes[0]
    ax.plot(np.arange(a["history"].size), a["history"], "o-", ms=3, color="k", label=LABELS["learned"])
    colors = {"none": "0.5", "inverse_set_frequency": "tab:blue", "inverse_class_frequency": "tab:orange",
              "logit_adjustment": "tab:green"}
    for i, m in enumerate(methods):
        if m in colors:
            ax.axhline(S[i, 0], color=colors[m], ls="--" if m != "logit_adjustment" else ":",
                       lw=1.2, label=f"{LABELS[m]}: {S[i, 0]:.2e}")
    ax.set(yscale="log", xlabel="gradient step", ylabel="‖WWᵀ/‖WWᵀ‖ − P/‖P‖‖²",
           title="distance of the certified classifier to a simplex ETF")
    ax.legend(fontsize=7)
    ax = axes[1]
    x = np.arange(len(meta["sets"]))
    wdt = 0.27
    ax.bar(x - wdt, a["c_inverse_set"], wdt, color="tab:blue", label=LABELS["inverse_set_frequency"])
    ax.bar(x, a["c_inverse_class"], wdt, color="tab:orange", label=LABELS["inverse_class_frequency"])
    ax.bar(x + wdt, a["c_learned"], wdt, color="k", label=LABELS["learned"])
    ax.set_xticks(x, meta["sets"], rotation=45, fontsize=7)
    ax.set(yscale="log", ylabel="loss weight c_s (Σ π_s c_s = 1)", title="per-label-set loss weights")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.axis("off")
    lines = [f"{'method':30s} {'ETF dist.':>10s} {'R_tag':>8s} {'max/min ‖w_k‖':>14s}"]
    for i, m in enumerate(methods):
        lines.append(f"{LABELS[m]:30s} {S[i, 0]:10.2e} {S[i, 1]:8.4f} {S[i, 2]:14.4f}")
    lines.append("")
    lines.append(f"learned: {int(a['solves'])} certified solves + reverse passes, {float(a['seconds']):.1f} s")
    ax.text(0.0, 0.9, "\n".join(lines), family="monospace", fontsize=7.5, va="top")
    ax.set_title("which remedy gets closer, at what cost")
    return finish(fig, f"Inverse design: K = {cfg['num_classes']}, singletons {{0}}, {{1}} "
                       f"{cfg['ratio']:g}× as frequent as {{2}}, {{3}}; π(1) = {cfg['singleton_mass']}, "
                       f"pairs uniform; PAL, d = K, λW = λH = {cfg['lambda_w']:g}, free bias")
