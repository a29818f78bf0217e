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

__all__ = ["STYLE", "apply_style", "savefig", "LOSS_COLORS", "compare_figure", "cosine_gram"]

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
