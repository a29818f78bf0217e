"""Figure `network_vs_ufm`: does a trained network land where the UFM says?

For each real data set (emotions, yeast, scene: MULAN features shipped in
`mlnc_jax/io/data/features`), loss and backbone width, an MLP is trained to its terminal phase
on a fixed random training subset (`mlnc_jax.networks`, λ_θ = 0), and its last layer is
compared with the certified reduced-UFM optimum of the empirical label distribution of the
same subset (same λ_W, λ_H, d): label-set-mean Gram, W Wᵀ, logits, objective gap
(THEORY §2, §3, §7), NC1, and the synthesis residuals of §6 on the network's means.
One extra run with λ_θ > 0 shows what a weight penalty on the backbone does. At the widest
width, λ_W and λ_H are fitted to each network (`mlnc_jax.fit_lambdas`): which UFM is it at?
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from mlnc_jax import LabelDistribution, UFMConfig, solve_batch
from mlnc_jax import networks as nw
from mlnc_jax.analysis.synthesis import synthesis_report

from ._common import LOSS_COLORS, finish, gram_image, log_ticks_note

NAME = "network_vs_ufm"

# per-record columns of the training trace (after the objective)
TRACE_COLUMNS = ("gram_h_error", "gram_h_error_scaled", "gram_w_error", "logit_error", "nc1",
                 "within_ratio", "objective_gap")
# stacked [dataset, loss, width] tables
TABLES = ("net_objective", "means_objective", "ufm_objective", "objective_gap", "gram_h_error",
          "gram_h_error_scaled", "gram_h_error_weighted", "gram_w_error", "logit_error", "nc1",
          "within_ratio", "terminal", "lbfgs_steps", "seconds", "synthesis_freefit_median",
          "ufm_synthesis_freefit_median")


@dataclass(frozen=True)
class Config:
    datasets: tuple = ("emotions", "yeast", "scene")
    losses: tuple = ("pal", "bce", "mse")
    widths: tuple = (16, 64, 256)
    depth: int = 2
    dim: int = 16
    activation: str = "tanh"
    num_samples: int = 300
    lambda_w: float = 5e-3
    lambda_h: float = 5e-3
    adam_steps: int = 500
    learning_rate: float = 3e-3
    lbfgs_steps: int = 1000
    rtol: float = 1e-12
    patience: int = 20
    num_records: int = 24
    heatmap_dataset: str = "emotions"
    heatmap_loss: str = "pal"
    lambda_theta: float = 1e-3
    seed: int = 0
    ufm_tol: float = 1e-10
    fit: bool = True             # fit λ_W, λ_H to the widest networks (tests/test_measure.py
                                 # covers the fit; the quick run leaves it out)


FULL = Config()
QUICK = Config(datasets=("emotions",), losses=("pal",), widths=(16,), num_samples=60, fit=False,
               adam_steps=40, lbfgs_steps=40, num_records=8)


def _train_config(cfg: Config, loss: str, lambda_theta: float = 0.0) -> nw.TrainConfig:
    return nw.TrainConfig(loss, cfg.lambda_w, cfg.lambda_h, lambda_theta, cfg.adam_steps,
                          cfg.learning_rate, cfg.lbfgs_steps, cfg.rtol, cfg.patience,
                          cfg.num_records)


def _data(cfg: Config):
    out = {}
    for ds in cfg.datasets:
        X, Y, names = nw.load_features(ds)
        idx = nw.subsample(Y, cfg.num_samples, cfg.seed)
        X, Y = X[idx], Y[idx]
        dist = LabelDistribution.from_label_matrix(Y)
        out[ds] = {"X": X, "Y": Y, "dist": dist, "set_index": nw.sample_set_index(Y, dist),
                   "Xs": jnp.asarray(nw.standardize(X)), "names": names, "N_all": len(idx)}
    return out


def _solve_ufm(cfg: Config, data: dict) -> dict:
    """One `solve_batch` call per (loss, number of classes)."""
    sols = {}
    for loss in cfg.losses:
        config = UFMConfig(loss, cfg.dim, cfg.lambda_w, cfg.lambda_h)
        by_k = {}
        for ds in cfg.datasets:
            by_k.setdefault(data[ds]["dist"].num_classes, []).append(ds)
        for group in by_k.values():
            res = solve_batch([data[ds]["dist"] for ds in group], config, seeds=0,
                              tol=cfg.ufm_tol, progress=False)
            for i, ds in enumerate(group):
                sols[ds, loss] = res.item(i)
    return sols


def _observer(d, ufm, config):
    def observe(p):
        c = nw.compare_network(nw.features(p.layers, d["Xs"]), p.W, p.b, d["set_index"],
                               d["dist"], ufm, config)
        return [c.gram_h_error, c.gram_h_error_scaled, c.gram_w_error, c.logit_error, c.nc1,
                c.within_ratio, c.net_objective - c.ufm_objective]
    return observe


def _run_case(cfg, d, ufm, loss, width, lambda_theta):
    mlp = nw.MLPConfig(width, cfg.depth, cfg.dim, cfg.activation)
    tc = _train_config(cfg, loss, lambda_theta)
    config = tc.ufm_config(cfg.dim)
    t = time.perf_counter()
    r = nw.train(d["X"], d["Y"], mlp, tc, seed=cfg.seed, observe=_observer(d, ufm, config))
    sec = time.perf_counter() - t
    H = np.asarray(nw.features(r.params.layers, d["Xs"], cfg.activation))
    cmp = nw.compare_network(H, r.params.W, r.params.b, d["set_index"], d["dist"], ufm, config)
    means = nw.label_set_means(H, d["set_index"], d["dist"].num_sets)
    return r, cmp, means, sec


def _table_entry(r, c, means, sec, dist, ufm_syn) -> dict:
    """One [dataset, loss, width] entry of every table."""
    row = {name: getattr(c, name) for name in (
        "net_objective", "means_objective", "ufm_objective", "gram_h_error",
        "gram_h_error_scaled", "gram_h_error_weighted", "gram_w_error", "logit_error", "nc1",
        "within_ratio")}
    row.update(objective_gap=c.net_objective - c.ufm_objective, terminal=float(r.terminal),
               lbfgs_steps=r.lbfgs_steps, seconds=sec,
               synthesis_freefit_median=synthesis_report(means, dist).summary["freefit_median"],
               ufm_synthesis_freefit_median=ufm_syn)
    return row


def _ufm_arrays(pre, u) -> dict:
    return {f"{pre}_ufm_W": np.asarray(u.W), f"{pre}_ufm_H": np.asarray(u.H),
            f"{pre}_ufm_b": np.asarray(u.b), f"{pre}_ufm_certificate": np.asarray(u.certificate)}


def _store_fit(out, pre, r, means, d, cfg, loss):
    """Which UFM is the trained network at? λ_W, λ_H fitted to its `W` and label-set means
    through the certified optimum (`mlnc_jax.fit_lambdas`, THEORY §8)."""
    config = UFMConfig(loss, min(cfg.dim, d["dist"].num_classes), 1.0, 1.0)
    f = nw.fit_lambdas(r.params.W, means, d["dist"], config)
    for name in ("lambda_w", "lambda_h", "distance", "log_std", "balance", "converged"):
        out[f"{pre}_fit_{name}"] = np.asarray(getattr(f, name))
    return f


def _width_cases(cfg, d, u, ds, loss, out):
    """Train at every width against the UFM optimum `u`: the table entries per width and
    one line per case; the λ fit at the widest width."""
    ufm_syn = synthesis_report(u.H, d["dist"]).summary["freefit_median"]
    entries, cases = [], []
    for width in cfg.widths:
        r, c, means, sec = _run_case(cfg, d, u, loss, width, 0.0)
        pre = f"{ds}_{loss}_w{width}"
        _store_case(out, pre, r, means, d, cfg)
        if width == max(cfg.widths) and cfg.fit:
            f = _store_fit(out, pre, r, means, d, cfg, loss)
            _say(f"{pre}: fitted λ_W {f.lambda_w:.6g}, λ_H {f.lambda_h:.6g}")
        entries.append(_table_entry(r, c, means, sec, d["dist"], ufm_syn))
        cases.append(f"{pre}: gram_h {c.gram_h_error:.3g}, gap "
                     f"{c.net_objective - c.ufm_objective:.3g}, {sec:.1f} s")
        _say(cases[-1])
    return entries, cases


def _weight_decay_case(cfg, data, sols, out) -> list:
    """One weight-decayed backbone: λ_θ > 0 on the heatmap case at the widest width."""
    ds, loss, width = cfg.heatmap_dataset, cfg.heatmap_loss, max(cfg.widths)
    if ds not in data or loss not in cfg.losses:
        return []
    d, u = data[ds], sols[ds, loss]
    r, c, means, _ = _run_case(cfg, d, u, loss, width, cfg.lambda_theta)
    pre = f"theta_{ds}_{loss}_w{width}"
    _store_case(out, pre, r, means, d, cfg)
    if cfg.fit:
        _store_fit(out, pre, r, means, d, cfg, loss)
    for name in c._fields:
        out[f"{pre}_{name}"] = np.asarray(getattr(c, name))
    out[f"{pre}_lambda_theta"] = np.asarray(cfg.lambda_theta)
    return [f"{pre} (λ_θ = {cfg.lambda_theta:g}): gram_h {c.gram_h_error:.3g}"]


def _info(cfg, data, cert, cases) -> dict:
    return {"datasets": list(cfg.datasets), "losses": list(cfg.losses),
            "num_samples": {ds: int(data[ds]["N_all"]) for ds in cfg.datasets},
            "num_sets": {ds: int(data[ds]["dist"].num_sets) for ds in cfg.datasets},
            "singleton_sample_sets": {ds: int(np.sum(np.bincount(data[ds]["set_index"]) == 1))
                                      for ds in cfg.datasets},
            "ufm_certified": cert, "cases": cases, "seed": cfg.seed,
            "tables_axes": ["dataset", "loss", "width"]}


def compute(cfg: Config, progress=None):
    data = _data(cfg)
    t = time.perf_counter()
    sols = _solve_ufm(cfg, data)
    _say(f"UFM optima: {time.perf_counter() - t:.1f} s")
    shape = (len(cfg.datasets), len(cfg.losses), len(cfg.widths))
    tab = {k: np.full(shape, np.nan) for k in TABLES}
    out = {"lambda_w": np.asarray(cfg.lambda_w), "lambda_h": np.asarray(cfg.lambda_h),
           "widths": np.asarray(cfg.widths), "trace_columns": np.asarray(TRACE_COLUMNS)}
    cert, cases = {}, []
    for i, ds in enumerate(cfg.datasets):
        d = data[ds]
        out[f"{ds}_label_sets"] = np.asarray(d["dist"].label_sets)
        out[f"{ds}_weights"] = np.asarray(d["dist"].weights)
        out[f"{ds}_set_index"] = d["set_index"]
        for j, loss in enumerate(cfg.losses):
            u = sols[ds, loss]
            cert[f"{ds}_{loss}"] = bool(u.certified)
            out.update(_ufm_arrays(f"{ds}_{loss}", u))
            entries, lines = _width_cases(cfg, d, u, ds, loss, out)
            for k, entry in enumerate(entries):
                for name, v in entry.items():
                    tab[name][i, j, k] = v
            cases += lines
    out.update(tab)
    cases += _weight_decay_case(cfg, data, sols, out)
    return out, _info(cfg, data, cert, cases)


def _say(msg):
    print(f"  {NAME}: {msg}", file=sys.stderr, flush=True)


def _store_case(out, pre, r, means, d, cfg):
    out[f"{pre}_net_means"] = means
    out[f"{pre}_net_W"] = np.asarray(r.params.W)
    out[f"{pre}_net_b"] = np.asarray(r.params.b)
    out[f"{pre}_label_sets"] = np.asarray(d["dist"].label_sets)
    out[f"{pre}_weights"] = np.asarray(d["dist"].weights)
    out[f"{pre}_lambda_w"] = np.asarray(cfg.lambda_w)
    out[f"{pre}_lambda_h"] = np.asarray(cfg.lambda_h)
    out[f"{pre}_trace_step"] = r.trace.step
    out[f"{pre}_trace_phase"] = r.trace.phase
    out[f"{pre}_trace_objective"] = r.trace.objective
    out[f"{pre}_trace"] = r.trace.observed


def _order(weights):
    return np.argsort(-np.asarray(weights), kind="stable")


def _width_panel(ax, a, meta, i, ds):
    losses, widths = meta["losses"], a["widths"]
    for j, loss in enumerate(losses):
        c = LOSS_COLORS[loss]
        ax.plot(widths, a["gram_h_error"][i, j], "o-", color=c, label=f"{loss}: μμᵀ vs H*H*ᵀ")
        ax.plot(widths, a["gram_w_error"][i, j], "s--", color=c, ms=4, alpha=0.8,
                label=f"{loss}: WWᵀ")
    ax.set(xscale="log", yscale="log", xlabel="backbone width",
           ylabel="relative error vs certified UFM optimum",
           title=f"{ds} (N = {meta['num_samples'][ds]}, T = {meta['num_sets'][ds]} label sets)")
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.set_xticks([], minor=True)
    ax.axhline(0.05, color="0.5", lw=0.8, ls=":")
    lo = np.nanmin([a["gram_h_error"][i], a["gram_w_error"][i]])
    ax.set_ylim(bottom=lo / 30)                      # room for the note below the lines
    gaps = ", ".join(f"{loss} {a['objective_gap'][i, j, -1]:.1e}"
                     for j, loss in enumerate(losses))
    log_ticks_note(ax, f"F_net − F*_UFM at width {int(widths.max())}: {gaps}\n(≥ 0 everywhere: "
                       f"{'yes' if np.all(a['objective_gap'][i] >= -1e-9) else 'NO'})")


def _trace_panel(ax, a, meta, i, ds):
    cols, wmax = list(a["trace_columns"]), int(a["widths"].max())
    for j, loss in enumerate(meta["losses"]):
        pre = f"{ds}_{loss}_w{wmax}"
        st, tr = a[f"{pre}_trace_step"], a[f"{pre}_trace"]
        x = st + 1
        ax.plot(x, tr[:, cols.index("gram_h_error")], "-", color=LOSS_COLORS[loss],
                label=f"{loss}: μμᵀ error")
        gap = tr[:, cols.index("objective_gap")] / abs(a["ufm_objective"][i, j, -1])
        ax.plot(x, np.maximum(gap, 1e-16), ":", color=LOSS_COLORS[loss],
                label=f"{loss}: (F_net − F*)/F*")
        ph = a[f"{pre}_trace_phase"]
        if np.any(ph == 1) and j == 0:
            ax.axvline(x[np.argmax(ph == 1)], color="0.6", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="step + 1 (Adam, then L-BFGS after the grey line)",
           ylabel="error / relative gap", title=f"{ds}: training time, width {wmax}")


def _heatmap_panels(a, meta):
    """(Gram, title) per heatmap, rows by label-set weight: the UFM optimum, the network at
    λθ = 0 and, where it ran, at λθ > 0; none without the heatmap case."""
    dss, losses = meta["datasets"], meta["losses"]
    ds, loss = meta["config"]["heatmap_dataset"], meta["config"]["heatmap_loss"]
    if ds not in dss or loss not in losses:
        return []
    i, j, wmax = dss.index(ds), losses.index(loss), int(a["widths"].max())
    order = _order(a[f"{ds}_weights"])
    net = a[f"{ds}_{loss}_w{wmax}_net_means"][order]
    ufm = a[f"{ds}_{loss}_ufm_H"][order]
    panels = [(ufm @ ufm.T, (f"UFM optimum H*H*ᵀ ({loss}, certified: "
                             f"{meta['ufm_certified'][f'{ds}_{loss}']})")),
              (net @ net.T, (f"network μμᵀ, width {wmax}, λθ = 0\n"
                             f"error {a['gram_h_error'][i, j, -1]:.2%}"))]
    tpre = f"theta_{ds}_{loss}_w{wmax}"
    if f"{tpre}_net_means" in a:
        m = a[f"{tpre}_net_means"][order]
        panels.append((m @ m.T, (f"network μμᵀ, width {wmax}, λθ = "
                                 f"{float(a[f'{tpre}_lambda_theta']):g}\n"
                                 f"error {float(a[f'{tpre}_gram_h_error']):.2%}")))
    return panels


def _heatmaps(fig, gs, panels):
    vmax = np.abs(panels[0][0]).max()
    for k, (G, title) in enumerate(panels):
        ax = fig.add_subplot(gs[2, k])
        im = gram_image(ax, G, vmax)
        ax.set_title(title, fontsize=8)
        ax.set_ylabel("label sets" if k == 0 else "")
        ax.set_xlabel("label sets, most frequent first")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Gram entry (colour scale of H*H*ᵀ)")


def _fit_panel(ax, a, meta):
    """Fitted λ's over the training λ's, per (data set, loss) at the widest width, and the
    weight-decayed backbone's effective pair."""
    wmax, lw, lh = int(a["widths"].max()), float(a["lambda_w"]), float(a["lambda_h"])
    rows = [(f"{ds} {loss}", f"{ds}_{loss}_w{wmax}") for ds in meta["datasets"]
            for loss in meta["losses"]]
    ds, loss = meta["config"]["heatmap_dataset"], meta["config"]["heatmap_loss"]
    if f"theta_{ds}_{loss}_w{wmax}_fit_lambda_w" in a:
        rows.append((f"{ds} {loss}, λθ > 0", f"theta_{ds}_{loss}_w{wmax}"))
    if not all(f"{pre}_fit_lambda_w" in a for _, pre in rows):
        ax.text(0.5, 0.5, "λ fits not run (quick mode)", ha="center", transform=ax.transAxes)
        return
    x = np.arange(len(rows))
    for off, key, ref, mk, lab in ((-0.12, "lambda_w", lw, "o", "λW fitted / trained"),
                                   (0.12, "lambda_h", lh, "s", "λH fitted / trained")):
        v = np.array([float(a[f"{pre}_fit_{key}"]) / ref for _, pre in rows])
        ax.plot(x + off, v, mk, label=lab)
        for xi, vi in zip(x + off, v):
            ax.annotate(f"{vi:.4g}", (xi, vi), fontsize=5.5, xytext=(2, 3), textcoords="offset points")
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(x, [name for name, _ in rows], rotation=20, fontsize=7)
    ax.set(ylabel="fitted / trained λ", title=f"Which UFM is the network at? λ's fitted through "
           f"the certified optimum (width {wmax}; trained at λW = {lw:g}, λH = {lh:g})")
    ax.legend(fontsize=7)


def plot(a, meta):
    dss = meta["datasets"]
    nd = len(dss)
    fig = plt.figure(figsize=(4.4 * max(nd, 3), 14.0))
    gs = fig.add_gridspec(4, max(nd, 3), height_ratios=[1, 1, 1.15, 0.8])
    for i, ds in enumerate(dss):
        ax = fig.add_subplot(gs[0, i])
        _width_panel(ax, a, meta, i, ds)
        if i == nd - 1:
            ax.legend(fontsize=6.5, loc="upper right", ncol=1)
        ax = fig.add_subplot(gs[1, i])
        _trace_panel(ax, a, meta, i, ds)
        if i == 0:
            ax.legend(fontsize=6.5, loc="lower left")
    panels = _heatmap_panels(a, meta)
    if panels:
        _heatmaps(fig, gs, panels)
    _fit_panel(fig.add_subplot(gs[3, :]), a, meta)
    return finish(fig, "Trained MLPs against the certified UFM optimum of their training label "
                       "distribution (same λW, λH, d)", 11)
