"""Figure `sensitivity`: which label sets hold the learned geometry together (THEORY §8).

On a real label distribution (PASCAL VOC 2007 trainval; quick run: scene), PAL, d = K:
the derivative of the certified optimum's weakest logit contrasts σ_1, σ_2
(`mlnc_jax.analysis.geometry.contrast_separation`) and of the tag-wise averaging residual
(root mean square over the pairs and larger sets, `mlnc_jax.analysis.metrics.tagwise_residuals`)
with respect to every label set's weight, from one reverse pass through `mlnc_jax.optimum`
(implicit differentiation), set against the derivative of the label spectrum's κ_m
(`mlnc_jax.theory.spectra.spectrum_arrays`) that a purely label-side account would predict.

All derivatives are log-elasticities `∂ log q / ∂ log w_s` (weights normalised, π = w/Σw): the
relative change of q when set s becomes 1 % more frequent, in %. A few of them are checked
against central differences of certified solves (relative step 1e-4 in w_s).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import mlnc_jax as mj
from mlnc_jax.analysis.geometry import contrast_separation
from mlnc_jax.analysis.metrics import tagwise_residuals
from mlnc_jax.theory.spectra import spectrum_arrays

from ._common import finish, note

NAME = "sensitivity"


@dataclass(frozen=True)
class Config:
    dataset: str = "voc2007_trainval"
    loss: str = "pal"
    lambda_w: float = 5e-3
    lambda_h: float = 5e-3
    seed: int = 0
    tol: float = 1e-12
    fd_checks: int = 4       # label sets whose derivatives are checked by central differences
    fd_step: float = 1e-4


FULL = Config()
QUICK = Config(dataset="scene", fd_checks=1)


def _measures(z, gram_H, Y, pi):
    cs = contrast_separation(z, Y, pi)
    r = tagwise_residuals(gram_H, np.asarray(Y))[0]
    return jnp.stack([cs.per_multiplicity[1], cs.per_multiplicity[2], jnp.sqrt(jnp.mean(r * r))])


def _host_measures(dist, config, w, tol, seed):
    """The same measures from a concrete certified solve at weights w/Σw (for the checks)."""
    d = mj.LabelDistribution(np.asarray(dist.label_sets), w / w.sum(), dist.num_classes)
    r = mj.solve(d, config, seed=seed, tol=tol)
    assert r.certified, r.reason
    z = r.H @ r.W.T + r.b
    cs = contrast_separation(z, np.asarray(d.label_sets), np.asarray(d.weights))
    tw = mj.synthesis_report(r.H, d).tagwise_residual
    tw = tw[np.isfinite(tw)]
    return np.array([cs.per_multiplicity[1], cs.per_multiplicity[2], np.sqrt(np.mean(tw**2))])


def compute(cfg: Config, progress=None):
    with jax.enable_x64(True):  # derivatives of the optimum need float64
        return _compute(cfg)


def _compute(cfg: Config):
    dist = mj.load_real(cfg.dataset)
    K = dist.num_classes
    config = mj.UFMConfig(cfg.loss, K, cfg.lambda_w, cfg.lambda_h)
    Y = jnp.asarray(dist.label_sets)
    w0 = np.asarray(dist.weights, dtype=np.float64)

    def geometry(w):
        o = mj.optimum(mj.LabelDistribution(Y, w, K), config, seed=cfg.seed, tol=cfg.tol)
        return _measures(o.logits, o.gram_H, Y, w / jnp.sum(w)), o.certificate

    def kappas(w):
        sp = spectrum_arrays(Y, w / jnp.sum(w))
        return jnp.stack([sp.kappa[1], sp.kappa[2]])

    vals, cert = geometry(jnp.asarray(w0))
    J = np.asarray(jax.jit(jax.jacrev(lambda w: geometry(w)[0]))(jnp.asarray(w0)))  # [3, T]
    Jk = np.asarray(jax.jacrev(kappas)(jnp.asarray(w0)))                             # [2, T]
    vals, kap = np.asarray(vals), np.asarray(kappas(jnp.asarray(w0)))
    el = J * w0[None, :] / vals[:, None]          # ∂ log q / ∂ log w_s
    elk = Jk * w0[None, :] / kap[:, None]
    # central differences of certified solves for the most influential sets
    rows = np.argsort(-np.abs(el[1]))[:cfg.fd_checks]
    fd = np.zeros((rows.size, 3))
    for i, s in enumerate(rows):
        h = cfg.fd_step
        wp, wm = w0.copy(), w0.copy()
        wp[s] *= 1 + h
        wm[s] *= 1 - h
        qp = _host_measures(dist, config, wp, cfg.tol, cfg.seed)
        qm = _host_measures(dist, config, wm, cfg.tol, cfg.seed)
        fd[i] = (qp - qm) / (2 * h) / vals
    fd_err = np.abs(fd - el[:, rows].T) / np.maximum(np.abs(fd), 1e-12)
    out = {"weights": w0, "multiplicity": dist.multiplicities, "values": vals, "kappa": kap,
           "elasticity": el, "kappa_elasticity": elk, "fd_rows": rows, "fd_elasticity": fd,
           "fd_rel_error": fd_err, "certificate": np.asarray(cert)}
    names = mj.real_metadata(cfg.dataset).get("class_names") or [str(k) for k in range(K)]
    info = {"dataset": cfg.dataset, "num_classes": K, "num_sets": dist.num_sets,
            "set_names": ["+".join(names[k] for k in S) for S in dist.sets],
            "seed": cfg.seed}
    return out, info


def _contrast_panel(ax, a, names, j, cmap):
    """σ_m against κ_m elasticities (m = j + 1), one dot per label set; returns the dots."""
    el, elk, w, m = a["elasticity"], a["kappa_elasticity"], a["weights"], a["multiplicity"]
    mm = j + 1
    sc = ax.scatter(elk[j], el[j], c=m, cmap=cmap, s=12 + 400 * np.sqrt(w), alpha=0.8,
                    edgecolors="k", linewidths=0.3, vmin=1, vmax=max(m.max(), 2))
    lim = np.max(np.abs(np.concatenate([elk[j], el[j]]))) * 1.05
    ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=0.8, ls=":", label="σ elasticity = κ elasticity")
    ax.axhline(0, color="0.8", lw=0.6)
    ax.axvline(0, color="0.8", lw=0.6)
    for s in np.argsort(-np.abs(el[j]))[:5]:
        ax.annotate(names[s], (elk[j][s], el[j][s]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    same = m == mm  # κ_m depends only on the sets of multiplicity m
    c = np.corrcoef(elk[j][same], el[j][same])[0, 1]
    agree = np.mean(np.sign(el[j][same]) == np.sign(elk[j][same]))
    other = np.max(np.abs(el[j][~same])) if np.any(~same) else 0.0
    ax.set(xlabel=f"∂ log κ_{mm} / ∂ log w_s  (label spectrum)",
           ylabel=f"∂ log σ_{mm} / ∂ log w_s  (certified optimum, implicit)",
           title=f"weakest logit contrast σ_{mm} = {a['values'][j]:.4g} vs κ_{mm} = {a['kappa'][j]:.4g}")
    note(ax, f"one dot per label set (size ∝ √π_s, colour = |S|)\n"
             f"sets with |S| = {mm}: corr = {c:.2f}, same sign {agree:.0%}\n"
             f"other sets: κ_{mm} elasticity 0, σ_{mm} up to {other:.2f}", (0.02, 0.98), va="top")
    ax.legend(loc="lower right", fontsize=7)
    return sc


def _residual_panel(ax, a, names, cmap):
    el, w, m = a["elasticity"], a["weights"], a["multiplicity"]
    ax.scatter(w, el[2], c=m, cmap=cmap, s=14, edgecolors="k", linewidths=0.3,
               vmin=1, vmax=max(m.max(), 2))
    for s in np.argsort(-np.abs(el[2]))[:6]:
        ax.annotate(names[s], (w[s], el[2][s]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="0.8", lw=0.6)
    ax.set(xscale="log", xlabel="label-set weight π_s",
           ylabel="∂ log R_tag / ∂ log w_s",
           title=f"tag-wise averaging residual R_tag = {a['values'][2]:.4g} (RMS over |S| ≥ 2)")
    note(ax, f"check: central differences of certified solves on {len(a['fd_rows'])} sets:\n"
             f"max rel. error {np.max(a['fd_rel_error']):.1e} (σ_1, σ_2, R_tag)")


def plot(a, meta):
    names = meta["set_names"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    cmap = plt.get_cmap("viridis")
    for j, ax in enumerate(axes[:2]):
        sc = _contrast_panel(ax, a, names, j, cmap)
    fig.colorbar(sc, ax=axes[1], label="|S|")
    _residual_panel(axes[2], a, names, cmap)
    cfg = meta["config"]
    return finish(fig, f"Which label sets hold the geometry together: {meta['dataset']} (K = "
                       f"{meta['num_classes']}, {meta['num_sets']} label sets), {cfg['loss']}, d = K, "
                       f"λW = λH = {cfg['lambda_w']:g}; derivatives of the certified optimum "
                       f"(ρ − 1 = {float(a['certificate']) - 1:.0e}) by implicit differentiation")
