"""Figure `real_labels`: real label distributions (shipped count tables, `mlnc_jax.io.real_labels`).

One row per data set:

1. spectra (THEORY §1): the K−1 eigenvalues of C and of C_m on 1^⊥ (the multiplicities
   with the most mass), κ_m = the smallest, marked; τ² = λ_Wλ_H for reference (MSE switches
   off directions of C below it, §4);
2. MSE: prototype Gram H Hᵀ of the solver next to the closed form of §4, relative error;
3. PAL: prototype Gram of the solver next to the Gram of a synthesis prediction: the
   frequency-weighted rule of §4 applied to the PAL singleton prototypes
   (ĥ_S = Σ_{k∈S} h_k − (|S|−1)/(m̄−1) Σ_j p_j h_j, ĥ_k = h_k) when every class has its
   singleton in the support; otherwise (e.g. yeast: 1 singleton of 14) the best affine label
   map ĥ_S = A y_S + c (π-weighted least squares over all sets), which the §4 rule is a
   special case of. Residuals of tag-wise averaging, the frequency rule and the free fit
   (`mlnc_jax.analysis.synthesis`) are printed where they can be evaluated.

Heatmap rows are the `heatmap_sets` heaviest sets (all when T is smaller), ordered by
multiplicity, then lexicographically. Data sets with the same K share one `solve_batch`
call per loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from mlnc_jax import UFMConfig, mse_closed_form
from mlnc_jax.analysis.synthesis import synthesis_report
from mlnc_jax.io.real_labels import load_real, real_metadata
from mlnc_jax.theory.spectra import label_spectrum

from ._common import certified_note, gram_image, not_certified, note, solve_grid

NAME = "real_labels"
EIG_FLOOR = 1e-6
SPEC_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")


@dataclass(frozen=True)
class Config:
    datasets: tuple = ("emotions", "scene", "yeast", "voc2007_trainval")
    min_dim: int = 8               # d = max(K, min_dim)
    lambda_w: float = 5e-3
    lambda_h: float = 5e-3
    heatmap_sets: int = 40
    max_spectra: int = 4           # multiplicities drawn (largest mass first)
    seed: int = 0
    tol: float = 1e-10


FULL = Config()
QUICK = Config(datasets=("emotions", "scene"))


def _relfro(A, B):
    return float(np.linalg.norm(A - B) / np.linalg.norm(B))


def _prediction(H, dist):
    """(ĥ [T, d], rule name): §4 frequency rule from the singletons when possible, else the
    π-weighted affine least-squares fit ĥ = [Y, 1] B."""
    Y = np.asarray(dist.label_sets, dtype=np.float64)
    w = np.asarray(dist.weights, dtype=np.float64)
    p = w @ Y
    mbar = float(p.sum())
    single = dist.singleton_index()
    mult = Y.sum(1).round().astype(int)
    if all(k in single for k in range(dist.num_classes) if p[k] > 0) and abs(mbar - 1) > 1e-9:
        g = sum(p[j] * H[single[j]] for j in range(dist.num_classes) if p[j] > 0)
        Hk = np.stack([H[single[k]] if k in single else np.zeros(H.shape[1])
                       for k in range(dist.num_classes)])
        pred = Y @ Hk - ((mult - 1) / (mbar - 1))[:, None] * g[None, :]
        return pred, "§4 frequency rule from the PAL singletons"
    X = np.concatenate([Y, np.ones((len(Y), 1))], 1) * np.sqrt(w)[:, None]
    B = np.linalg.lstsq(X, H * np.sqrt(w)[:, None], rcond=None)[0]
    return np.concatenate([Y, np.ones((len(Y), 1))], 1) @ B, "affine fit ĥ_S = A y_S + c"


def _affine_residual(H, dist):
    """Relative residual of the affine label-map fit ĥ_S = A y_S + c, π-weighted and relative
    to the π-weighted spread ‖√π (h_s − h̄)‖ (the error of the best constant), comparable
    across data sets and defined without singletons."""
    Y = np.asarray(dist.label_sets, dtype=np.float64)
    w = np.asarray(dist.weights, dtype=np.float64)
    r = np.sqrt(w)[:, None]
    X = np.concatenate([Y, np.ones((len(Y), 1))], 1) * r
    B = np.linalg.lstsq(X, H * r, rcond=None)[0]
    return float(np.linalg.norm(X @ B - H * r) / np.linalg.norm((H - w @ H) * r))


def _subset(dist, n):
    w = np.asarray(dist.weights)
    keep = np.argsort(-w, kind="stable")[:n]
    sets = dist.sets
    return np.array(sorted(keep, key=lambda s: (len(sets[s]), sets[s])))


def _solve(cfg, dists):
    """Certified optima per (data set, loss): one call per (K, loss)."""
    sols, bad = {}, []
    for K in sorted({d.num_classes for d in dists.values()}):
        names = [n for n, d in dists.items() if d.num_classes == K]
        for loss in ("mse", "pal"):
            config = UFMConfig(loss, max(K, cfg.min_dim), cfg.lambda_w, cfg.lambda_h)
            res = solve_grid([dists[n] for n in names], config, seeds=cfg.seed, tol=cfg.tol)
            bad += not_certified(res, loss, names)
            sols.update({(n, loss): res.item(j) for j, n in enumerate(names)})
    return sols, bad


def _label_arrays(dist):
    ls = label_spectrum(dist)
    ms = list(ls.multiplicities)
    return {"spectrum_all": np.asarray(ls.spectrum_all), "multiplicities": np.asarray(ms),
            "multiplicity_mass": np.array([ls.multiplicity_mass[m] for m in ms]),
            "spectra": np.stack([np.asarray(ls.spectrum[m]) for m in ms]),
            "kappa": np.array([ls.kappa[m] for m in ms]), "kappa_all": np.asarray(ls.kappa_all),
            "multiplicity": dist.multiplicities.astype(int), "weights": np.asarray(dist.weights)}


def _mse_arrays(s, dist, config, rows):
    """The MSE solve against its closed form (§4)."""
    H = s.H
    cf = mse_closed_form(dist, config)
    G, Gcf = H @ H.T, cf.gram_H
    return {"mse_gram_error": np.asarray(_relfro(G, Gcf)),
            "mse_gram_w_error": np.asarray(_relfro(s.W @ s.W.T, cf.gram_W)),
            "mse_objective_gap": np.asarray(abs(s.objective - cf.objective) / abs(cf.objective)),
            "mse_gram": G[np.ix_(rows, rows)], "mse_cf_gram": Gcf[np.ix_(rows, rows)],
            "mse_rank": np.asarray(cf.rank),
            "mse_stats": np.array([s.grad_norm, s.certificate, s.certified]),
            "mse_status": np.asarray(s.status, dtype=str)}


def _pal_arrays(s, dist, rows):
    """The PAL solve against its synthesis prediction, and the name of the rule used."""
    H = s.H
    rep = synthesis_report(H, dist)
    pred, rule = _prediction(H, dist)
    ok = np.all(np.isfinite(pred), 1)
    Gp, Gr = H @ H.T, pred @ pred.T
    sub = np.ix_(ok, ok)
    out = {"pal_gram": Gp[np.ix_(rows, rows)], "pal_pred_gram": Gr[np.ix_(rows, rows)],
           "pal_gram_error": np.asarray(_relfro(Gr[sub], Gp[sub])),
           "pal_pred_residual": np.linalg.norm(H - pred, axis=1) / np.maximum(
               np.linalg.norm(H, axis=1), 1e-300),
           "pal_affine_residual": np.asarray(_affine_residual(H, dist))}
    for r in ("tagwise", "frequency_rule", "freefit"):
        out[f"pal_{r}_residual"] = np.asarray(getattr(rep, f"{r}_residual"), dtype=float)
    out["pal_freefit_trivial"] = np.asarray(rep.freefit_trivial)
    out["pal_stats"] = np.array([s.grad_norm, s.certificate, s.certified])
    out["pal_status"] = np.asarray(s.status, dtype=str)
    return out, rule


def compute(cfg: Config, progress=None):
    dists = {n: load_real(n) for n in cfg.datasets}
    sols, bad = _solve(cfg, dists)
    out, info = {}, {"datasets": list(cfg.datasets), "seed": cfg.seed, "class_names": {},
                     "rule": {}, "num_sets": {}, "dim": {}, "provenance": {},
                     "heatmap_sets": {}, "not_certified": bad}
    for i, (name, dist) in enumerate(dists.items()):
        d = max(dist.num_classes, cfg.min_dim)
        meta = real_metadata(name)
        info["class_names"][name] = meta["class_names"]
        info["provenance"][name] = meta["provenance"]
        info["num_sets"][name] = dist.num_sets
        info["dim"][name] = d
        rows = _subset(dist, cfg.heatmap_sets)
        info["heatmap_sets"][name] = [list(dist.sets[int(r)]) for r in rows]
        config = UFMConfig("mse", d, cfg.lambda_w, cfg.lambda_h)
        arrays = {**_label_arrays(dist), "rows": rows,
                  **_mse_arrays(sols[name, "mse"], dist, config, rows)}
        pal, info["rule"][name] = _pal_arrays(sols[name, "pal"], dist, rows)
        out.update({f"d{i}_{k}": v for k, v in {**arrays, **pal}.items()})
    return out, info


def _labels(sets, names):
    generic = all(n.lower().startswith("class") for n in names)
    fmt = (lambda k: str(k)) if generic else (lambda k: names[k][:4])
    return ["{" + ",".join(fmt(k) for k in s) + "}" for s in sets]


def _heat(ax, G, vmax, title, ticks, show_y):
    im = gram_image(ax, G, vmax, interpolation="nearest")
    n = G.shape[0]
    fs = 6 if n <= 16 else (4.8 if n <= 30 else 3.8)
    ax.set_xticks([])
    ax.set_yticks(range(n))
    ax.set_yticklabels(ticks if show_y else [], fontsize=fs)
    ax.set_title(title, fontsize=8)
    return im


def _below(ax, text):
    note(ax, text, (0.0, -0.03), va="top", ha="left")


def _med(x):
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return (np.median(x), np.max(x)) if x.size else (np.nan, np.nan)


def _kfmt(k):
    return f"{k:.2g}" if k >= EIG_FLOOR else f"≈0 (< {EIG_FLOOR:g})"


def _grid(n, h=4.5):
    """One row per data set: spectra | MSE pair + colour bar | PAL pair + colour bar."""
    fig = plt.figure(figsize=(21, h * n))
    gs = fig.add_gridspec(n, 9, width_ratios=(1.25, 0.1, 1, 1, 0.05, 0.28, 1, 1, 0.05),
                          left=0.04, right=0.975, top=1 - 0.8 / (h * n),
                          bottom=0.95 / (h * n), hspace=0.45, wspace=0.1)
    return fig, gs


def _spectra(ax, a, pre, name, K, T, cfg):
    tau2 = cfg["lambda_w"] * cfg["lambda_h"]
    mult = a[pre + "multiplicity"]
    idx = np.arange(1, K)
    ax.plot(idx, np.maximum(a[pre + "spectrum_all"], EIG_FLOOR), "k-", lw=2, marker="o", ms=3,
            label=f"C (all sets): κ = {_kfmt(float(a[pre + 'kappa_all']))}")
    ms, mass = a[pre + "multiplicities"], a[pre + "multiplicity_mass"]
    nsets = np.array([np.sum(mult == m) for m in ms])
    cand = np.flatnonzero(nsets >= 2)       # C_m = 0 for a single set of size m
    pick = cand[np.argsort(-mass[cand])][: cfg["max_spectra"]]
    for c, j in zip(SPEC_COLORS, sorted(pick, key=lambda j: ms[j])):
        spec = np.maximum(a[pre + "spectra"][j], EIG_FLOOR)
        ax.plot(idx, spec, color=c, lw=1.2, marker=".", ms=3,
                label=f"C_{ms[j]} (π({ms[j]}) = {mass[j]:.2f}, {nsets[j]} sets): "
                      f"κ_{ms[j]} = {_kfmt(a[pre + 'kappa'][j])}")
        ax.plot([1], [spec[0]], "*", color=c, ms=11, mec="k", mew=0.5)
    ax.axhline(tau2, color="0.5", ls=":", lw=1, label=f"τ² = λWλH = {tau2:.1e}")
    ax.set(yscale="log", xlabel="eigenvalue index on 1⊥ (ascending; ★ = κ_m)",
           ylabel="eigenvalue (label variance)", ylim=(EIG_FLOOR / 2, 2),
           title=f"{name}: K = {K}, T = {T} label sets, m̄ = "
                 f"{float(np.sum(a[pre + 'weights'] * mult)):.2f}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower right", fontsize=6.5)


def _heat_pair(fig, cells, pair, vmax, titles, ticks):
    """Solver Gram (left, with row labels) next to its reference on one colour scale, colour
    bar in the third cell; returns the left axes."""
    ax1, ax2 = fig.add_subplot(cells[0]), fig.add_subplot(cells[1])
    _heat(ax1, pair[0], vmax, titles[0], ticks, True)
    im = _heat(ax2, pair[1], vmax, titles[1], ticks, False)
    fig.colorbar(im, cax=fig.add_subplot(cells[2]))
    return ax1


def _mse_note(a, pre, T, d):
    st = a[pre + "mse_stats"]
    return (f"relative Gram error, solver vs closed form (all {T} sets): "
            f"{float(a[pre + 'mse_gram_error']):.1e}\n"
            f"W Wᵀ error {float(a[pre + 'mse_gram_w_error']):.1e}, objective gap "
            f"{float(a[pre + 'mse_objective_gap']):.1e}; rank {int(a[pre + 'mse_rank'])}, "
            f"d = {d}\n"
            f"solver ‖∇F‖ = {st[0]:.0e}, certificate ρ = {st[1]:.6f} "
            f"({'certified' if st[2] else 'NOT certified'})")


def _pal_note(a, pre, T):
    mult = a[pre + "multiplicity"]
    tw, fr, ff = (_med(a[pre + f"pal_{r}_residual"][mult >= 2]) for r in
                  ("tagwise", "frequency_rule", "freefit"))
    n_ok = int(np.sum(np.isfinite(a[pre + "pal_tagwise_residual"])))
    ps = a[pre + "pal_stats"]
    res = lambda x: "n/a (singletons missing)" if not np.isfinite(x[0]) else \
        f"{x[0]:.1e} (max {x[1]:.1e})"
    return (f"relative Gram error of the prediction: {float(a[pre + 'pal_gram_error']):.1e}; "
            f"solver ‖∇F‖ = {ps[0]:.0e}, ρ = {ps[1]:.6f} "
            f"({'certified' if ps[2] else 'NOT certified'})\n"
            f"median residual ‖h_S − ĥ_S‖/‖h_S‖ over {n_ok} sets with |S| ≥ 2 (max):\n"
            f"   tag-wise {res(tw)};  frequency rule (§4) {res(fr)};\n"
            f"   free fit on {{h_k}} ∪ {{Σ p_j h_j}} (§6) {res(ff)}\n"
            f"affine label-map fit, all {T} sets (π-weighted, rel. to spread): "
            f"{float(a[pre + 'pal_affine_residual']):.1e}")


def plot(a, meta):
    cfg = meta["config"]
    names = meta["datasets"]
    n = len(names)
    fig, gs = _grid(n)
    for i, name in enumerate(names):
        pre = f"d{i}_"
        T = meta["num_sets"][name]
        rows = a[pre + "rows"]
        _spectra(fig.add_subplot(gs[i, 0]), a, pre, name, len(meta["class_names"][name]), T, cfg)
        ticks = _labels(meta["heatmap_sets"][name], meta["class_names"][name])
        sub_note = f"top {len(rows)} of {T} sets by weight" if len(rows) < T else f"all {T} sets"
        G, Gcf = a[pre + "mse_gram"], a[pre + "mse_cf_gram"]
        ax = _heat_pair(fig, [gs[i, c] for c in (2, 3, 4)], (G, Gcf), np.max(np.abs(Gcf)),
                        (f"MSE solver: H Hᵀ ({sub_note})", "MSE closed form (§4)"), ticks)
        _below(ax, _mse_note(a, pre, T, meta["dim"][name]))
        Gp, Gr = a[pre + "pal_gram"], a[pre + "pal_pred_gram"]
        ax = _heat_pair(fig, [gs[i, c] for c in (6, 7, 8)], (Gp, Gr), np.nanmax(np.abs(Gp)),
                        (f"PAL solver: H Hᵀ ({sub_note})", f"prediction: {meta['rule'][name]}"),
                        ticks)
        _below(ax, _pal_note(a, pre, T))
    fig.suptitle(
        f"Real label distributions: label spectra (THEORY §1), MSE solver vs closed form (§4), "
        f"PAL solver vs synthesis prediction (§4, §6); λW = λH = {cfg['lambda_w']:g}, "
        f"d = max(K, {cfg['min_dim']}); heatmap rows (and columns) ordered by multiplicity; "
        f"{certified_note([a[f'd{i}_{l}_stats'][2] for i in range(n) for l in ('mse', 'pal')])}",
        fontsize=11)
    return fig
