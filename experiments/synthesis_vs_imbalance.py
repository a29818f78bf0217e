"""Figure `synthesis_vs_imbalance`: how higher-multiplicity prototypes are synthesised from
singleton prototypes as the singleton imbalance grows (THEORY §4, §6).

For singleton-imbalanced distributions (`singleton_imbalance`, multiplicities {1, 2}, max/min
singleton weight ratio 1 to 100) and each loss, the relative residual ‖h_S − ĥ_S‖/‖h_S‖ over
the pairs S of three rules (`mlnc_jax.analysis.synthesis`): (a) tag-wise averaging, (b) the
frequency-weighted rule of §4, exact for MSE, (c) the free fit of `h_S` on
`{h_k : k∈S} ∪ {Σ_j p_j h_j}` (§6). K ≥ 6, so the free fit (3 columns) is not exact by
dimension count (prototype rank ≥ K−1 = 5).

Family at each ratio: `step` and `exponential` imbalance, each also with the pair weights
multiplied by random log-normal factors (`perturbation`, seeded) to break the symmetry the
plain generators keep; one line per rule is the median over that family of the per-
distribution median over pairs, the band its min–max, the dashed line the worst pair.
Plain `step` imbalance (uniform pairs) keeps a symmetry between the major and the minor
classes; it is solved as well and reported on its own (markers), not pooled.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from mlnc_jax import UFMConfig
from mlnc_jax.analysis.synthesis import synthesis_report
from mlnc_jax.model.labels import LabelDistribution, singleton_imbalance

from ._common import certified_note, finish, log_ticks_note, not_certified, solve_grid

NAME = "synthesis_vs_imbalance"
LOSSES = ("pal", "pal_normalized", "mse", "bce")
RULES = ("tagwise", "frequency_rule", "freefit")
RULE_LABELS = {"tagwise": "(a) tag-wise averaging",
               "frequency_rule": "(b) frequency-weighted rule (§4)",
               "freefit": "(c) free fit on {h_k} ∪ {Σ p_j h_j} (§6)"}
RULE_COLORS = {"tagwise": "#9467bd", "frequency_rule": "#8c564b", "freefit": "#17becf"}
FLOOR = 1e-12  # residuals are drawn no lower than this (log axis)


@dataclass(frozen=True)
class Config:
    num_classes: tuple = (6, 8)
    extra_dim: int = 2            # d = K + extra_dim
    singleton_mass: float = 0.7   # π(1); π(2) = 1 − π(1)
    ratio_max: float = 100.0
    num_ratios: int = 9
    perturbation: float = 0.2     # σ of the log-normal factors on pair weights
    perturbed_seeds: int = 2      # per imbalance kind
    lambda_w: float = 5e-3
    lambda_h: float = 5e-3
    seed: int = 0
    tol: float = 1e-10


FULL = Config()
QUICK = Config(num_classes=(6,), num_ratios=3, perturbed_seeds=1)


def _perturb(dist: LabelDistribution, eps: float, seed: int) -> LabelDistribution:
    """Multiply the weights of the sets with |S| ≥ 2 by exp(eps·N(0,1)) (seeded), keeping π(m)."""
    Y = np.asarray(dist.label_sets)
    w = np.asarray(dist.weights, dtype=np.float64).copy()
    hi = Y.sum(1) >= 2
    f = np.exp(eps * np.random.default_rng(seed).normal(size=int(hi.sum())))
    w[hi] = w[hi] * f * w[hi].sum() / (w[hi] * f).sum()
    return LabelDistribution.from_sets(dist.sets, w, dist.num_classes)


def _members(cfg):
    """(K, kind, perturbed seed or 0): member 0 of each K is plain step (symmetric, kept apart)."""
    out = []
    for K in cfg.num_classes:
        out.append((K, "step", 0))
        out.append((K, "exponential", 0))
        for kind, s in itertools.product(("step", "exponential"), range(1, cfg.perturbed_seeds + 1)):
            out.append((K, kind, s))
    return out


def _dist(cfg, K, kind, s, ratio):
    d = singleton_imbalance(K, float(ratio), kind=kind,
                            multiplicity_mass={1: cfg.singleton_mass, 2: 1 - cfg.singleton_mass})
    return _perturb(d, cfg.perturbation, 1000 * K + s) if s else d


def compute(cfg: Config, progress=None):
    ratios = np.geomspace(1.0, cfg.ratio_max, cfg.num_ratios)
    members = _members(cfg)
    M, R = len(members), len(ratios)
    out = {"ratio": ratios,
           "member_classes": np.array([m[0] for m in members]),
           "member_exponential": np.array([m[1] == "exponential" for m in members]),
           "member_seed": np.array([m[2] for m in members]),
           "member_symmetric": np.array([m[1] == "step" and m[2] == 0 for m in members])}
    bad = []
    for loss in LOSSES:
        stats = {f"{r}_{s}": np.full((M, R), np.nan) for r in RULES for s in ("median", "max")}
        extra = {k: np.full((M, R), np.nan) for k in
                 ("grad_norm", "certificate", "mean_coef_ratio", "label_coef_freq_corr",
                  "prototype_rank", "num_freefit_trivial")}
        certified = np.zeros((M, R), bool)
        status = np.full((M, R), "", dtype=object)
        for K in cfg.num_classes:  # one call per (loss, K): every member × every ratio
            cells = [(i, j) for i, m in enumerate(members) if m[0] == K for j in range(R)]
            dists = [_dist(cfg, *members[i], ratios[j]) for i, j in cells]
            config = UFMConfig(loss, K + cfg.extra_dim, cfg.lambda_w, cfg.lambda_h)
            res = solve_grid(dists, config, seeds=cfg.seed, tol=cfg.tol)
            bad += not_certified(res, loss, [f"{members[i]}, ratio {ratios[j]:.3g}" for i, j in cells])
            for n, ((i, j), dist) in enumerate(zip(cells, dists)):
                sm = synthesis_report(res.item(n).H, dist).summary
                for rule in RULES:
                    for st in ("median", "max"):
                        stats[f"{rule}_{st}"][i, j] = sm[f"{rule}_{st}"]
                extra["grad_norm"][i, j] = res.grad_norm[n]
                extra["certificate"][i, j] = res.certificate[n]
                certified[i, j] = res.certified[n]
                status[i, j] = res.status[n]
                extra["mean_coef_ratio"][i, j] = sm["mean_coef_ratio_median"]
                extra["label_coef_freq_corr"][i, j] = sm["label_coef_freq_corr"]
                extra["prototype_rank"][i, j] = sm["prototype_rank"]
                extra["num_freefit_trivial"][i, j] = sm["num_freefit_trivial"]
        for k, v in {**stats, **extra}.items():
            out[f"{loss}_{k}"] = v
        out[f"{loss}_certified"] = certified
        out[f"{loss}_status"] = status.astype(str)
    info = {"not_certified": bad,
            "members": [f"K={K}, {kind}" + (f", pairs perturbed (seed {1000 * K + s})" if s else "")
                        for K, kind, s in members],
            "seed": cfg.seed,
            "distributions": f"singleton_imbalance(K, ratio, kind, multiplicity_mass="
                             f"{{1: {cfg.singleton_mass}, 2: {1 - cfg.singleton_mass:.2g}}}), "
                             f"pair weights × exp({cfg.perturbation}·N(0,1)) for perturbed members"}
    return out, info


def _loss_panel(ax, a, loss, gen, sym):
    ratio = a["ratio"]
    for rule in RULES:
        col = RULE_COLORS[rule]
        med = np.maximum(a[f"{loss}_{rule}_median"], FLOOR)
        mx = np.maximum(a[f"{loss}_{rule}_max"], FLOOR)
        ax.fill_between(ratio, np.nanmin(med[gen], 0), np.nanmax(med[gen], 0), color=col,
                        alpha=0.18, lw=0)
        ax.plot(ratio, np.nanmedian(med[gen], 0), color=col, lw=1.8, marker="o", ms=3,
                label=RULE_LABELS[rule])
        ax.plot(ratio, np.nanmax(mx[gen], 0), color=col, lw=1.0, ls="--")
    ax.plot(ratio, np.nanmax(np.maximum(a[f"{loss}_freefit_max"][sym], FLOOR), 0), "x",
            color="k", ms=5, label="(c) on plain step imbalance (uniform pairs): worst pair")
    ax.set(xscale="log", yscale="log", ylim=(FLOOR / 2, 3),
           title=f"{loss}", ylabel="relative residual ‖h_S − ĥ_S‖ / ‖h_S‖")


def _largest_ratio_note(ax, a, loss, gen, sym):
    j = -1
    md = {rule: np.nanmedian(a[f"{loss}_{rule}_median"][gen, j]) for rule in RULES}
    wc = {rule: np.nanmax(a[f"{loss}_{rule}_max"][gen, j]) for rule in RULES}
    sym_ff = np.nanmax(a[f"{loss}_freefit_max"][sym])
    log_ticks_note(ax, f"ratio {a['ratio'][j]:g}, median (worst pair):\n"
                       f"  tag-wise {md['tagwise']:.1e} ({wc['tagwise']:.1e})\n"
                       f"  freq. rule {md['frequency_rule']:.1e} ({wc['frequency_rule']:.1e})\n"
                       f"  free fit {md['freefit']:.1e} ({wc['freefit']:.1e})\n"
                       f"plain step, all ratios: free fit ≤ {sym_ff:.1e}",
                   loc=(0.02, 0.03))


def _legend(fig, ax):
    """The rules' colours from `ax`, and what solid and dashed lines stand for."""
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="0.3", lw=1.8), Line2D([], [], color="0.3", lw=1.0, ls="--")]
    labels += ["median over family (band: min–max of per-distribution medians)",
               "worst pair over family"]
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)


def _title(a, cfg, n_gen):
    gmax = max(np.nanmax(a[f"{loss}_grad_norm"]) for loss in LOSSES)
    rho = max(np.nanmax(np.abs(a[f"{loss}_certificate"] - 1)) for loss in LOSSES)
    cert = np.concatenate([a[f"{loss}_certified"].ravel() for loss in LOSSES])
    Ks = ", ".join(str(k) for k in cfg["num_classes"])
    return (f"Synthesis of pair prototypes from singleton prototypes vs singleton imbalance\n"
            f"K ∈ {{{Ks}}}, |S| ∈ {{1, 2}}, π(1) = {cfg['singleton_mass']:g}, d = K + {cfg['extra_dim']}, "
            f"λW = λH = {cfg['lambda_w']:g}; family per ratio: {n_gen} distributions (step / exponential "
            f"imbalance, pair weights × exp({cfg['perturbation']:g}·N(0,1)) or not)\n"
            f"all solves ‖∇F‖ ≤ {gmax:.0e}, |ρ−1| ≤ {rho:.0e}; {certified_note(cert)}")


def plot(a, meta):
    sym = a["member_symmetric"].astype(bool)
    gen = ~sym
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for ax, loss in zip(axes.ravel(), LOSSES):
        _loss_panel(ax, a, loss, gen, sym)
        if ax in axes[1]:
            ax.set_xlabel("singleton imbalance ratio  max_k π({k}) / min_k π({k})")
        _largest_ratio_note(ax, a, loss, gen, sym)
    _legend(fig, axes[0, 0])
    return finish(fig, _title(a, meta["config"], int(gen.sum())), rect=(0, 0.06, 1, 1))
