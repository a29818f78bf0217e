"""One shared figure style, and the figure of `mlnc-jax compare`.

Plots use matplotlib's Agg backend, DejaVu fonts embedded as TrueType (Type 42) in PDFs, and
no LaTeX.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..model.losses import LOSSES, Loss  # noqa: E402

__all__ = ["STYLE", "apply_style", "savefig", "LOSS_COLORS", "compare_figure", "cosine_gram",
           "measure_figure"]

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "text.usetex": False,
}

_PALETTE = ("#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")


class _LossColors(Mapping):
    """One colour per loss of `LOSSES`, by its position there, so a registered loss has one."""

    def __getitem__(self, loss):
        names = list(LOSSES)
        name = loss.name if isinstance(loss, Loss) else loss
        if name not in names:
            raise KeyError(name)
        return _PALETTE[names.index(name) % len(_PALETTE)]

    def __iter__(self):
        return iter(list(LOSSES))

    def __len__(self):
        return len(LOSSES)


LOSS_COLORS = _LossColors()


def apply_style() -> None:
    matplotlib.rcParams.update(STYLE)


def savefig(fig, path, *, formats=None) -> list[Path]:
    """Save `fig` to `path` (and to each extra suffix in `formats`), then close it."""
    path = Path(path)
    outs = [path] + [path.with_suffix(s) for s in (formats or []) if s != path.suffix]
    for p in outs:
        fig.savefig(p)
    plt.close(fig)
    return outs


def cosine_gram(H) -> np.ndarray:
    """Cosine similarities `h_sᵀh_t/(‖h_s‖‖h_t‖)` (0 where a prototype vanishes)."""
    H = np.asarray(H, dtype=np.float64)
    n = np.linalg.norm(H, axis=1)
    n = np.where(n > 0, n, np.inf)
    return (H / n[:, None]) @ (H / n[:, None]).T


def _set_labels(dist):
    return ["{" + ",".join(map(str, s)) + "}" for s in dist.sets]


def compare_figure(report, path) -> None:
    """Prototype cosine Grams of the MSE closed form and of each loss's solution, and the
    synthesis residuals per loss."""
    apply_style()
    n = len(report.losses) + 1
    fig, axes = plt.subplots(1, n + 1, figsize=(3.1 * (n + 1), 3.5), layout="constrained",
                             gridspec_kw={"width_ratios": [1] * n + [1.4]})
    labels = _set_labels(report.dist)
    T = len(labels)
    step = max(1, T // 12)
    panels = [("MSE closed form", report.closed_form.params.H)] + [
        (f"{r.loss} (solver)", r.result.H) for r in report.losses]
    for ax, (title, H) in zip(axes[:n], panels):
        im = ax.imshow(cosine_gram(H), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(title)
        ax.set_xticks(range(0, T, step))
        ax.set_xticklabels(labels[::step], rotation=90, fontsize=6)
        ax.set_yticks(range(0, T, step))
        ax.set_yticklabels(labels[::step], fontsize=6)
        ax.grid(False)
    fig.colorbar(im, ax=axes[n - 1], shrink=0.75, label="cosine(h_S, h_S')")
    ax = axes[n]
    names = [r.loss for r in report.losses]
    x = np.arange(len(names))
    width = 0.27
    for i, (key, lab) in enumerate([("tagwise_residual", "tag-wise averaging"),
                                    ("frequency_rule_residual", "frequency rule (§4)"),
                                    ("freefit_residual", "free fit (§6)")]):
        vals = np.array([getattr(r, key) for r in report.losses], dtype=float)
        ax.bar(x + (i - 1) * width, np.maximum(vals, 1e-16), width, label=lab)
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30)
    ax.set_ylabel("max relative residual over |S| ≥ 2")
    ax.set_title("synthesis rules")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    d = report.dist
    fig.suptitle(f"K = {d.num_classes}, {d.num_sets} label sets, d = {report.dim}, "
                 f"λW = {report.lambda_w:g}, λH = {report.lambda_h:g}: prototype geometry per loss "
                 f"and the synthesis rules", fontsize=10)
    savefig(fig, path)


def _errors_panel(ax, rep: Mapping) -> None:
    ps, worst = rep["per_set"], rep["worst_sets"]
    n, e = np.asarray(ps["samples"], float), np.maximum(np.asarray(ps["gram_row_error"], float), 1e-16)
    ax.scatter(n, e, s=12, color="tab:blue", alpha=0.7, label="label sets")
    for w in worst:
        ax.annotate("{" + ",".join(map(str, w["labels"])) + "}", (w["samples"], max(w["gram_row_error"], 1e-16)),
                    fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="samples of the label set",
           ylabel="‖G_s − G*_s‖ / ‖G*_s‖ (Gram row)", title="per label set (worst named)")


def measure_figure(rep: Mapping, path) -> None:
    """The figure of `mlnc-jax measure`, from its JSON report: the network's label-set-mean
    Gram next to the certified optimum's (rows by sample count, when the report holds them)
    and the per-set Gram-row errors."""
    apply_style()
    grams = rep.get("grams")
    ncol = 3 if grams else 1
    fig, axes = plt.subplots(1, ncol, figsize=(3.6 * ncol, 3.4), layout="constrained", squeeze=False)
    axes = axes[0]
    if grams:
        order = np.argsort(-np.asarray(rep["per_set"]["samples"], float), kind="stable")
        Gn, Gu = (np.asarray(grams[k], float)[np.ix_(order, order)] for k in ("network_means", "ufm"))
        vmax = max(np.abs(Gu).max(), 1e-300)
        for ax, G, title in ((axes[0], Gn, "network μμᵀ"), (axes[1], Gu, "certified UFM H*H*ᵀ")):
            im = ax.imshow(G, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.grid(False)
            ax.set(title=title, xlabel="label sets, most samples first")
        fig.colorbar(im, ax=axes[1], shrink=0.8)
    _errors_panel(axes[-1], rep)
    lam, cmp, fit = rep["lambdas"], rep["comparison"], rep["fit"]
    how = (f"fitted (relative std {fit['relative_std'][0]:.2g}, {fit['relative_std'][1]:.2g})"
           if fit else "given")
    fig.suptitle(f"{rep['metadata']['config']['loss']}: λW = {lam['lambda_w']:.3g}, λH = "
                 f"{lam['lambda_h']:.3g} {how}; UFM {rep['ufm']['status']}; Gram error "
                 f"{cmp['gram_h_error']:.2g}, WWᵀ {cmp['gram_w_error']:.2g}", fontsize=9)
    savefig(fig, path)
