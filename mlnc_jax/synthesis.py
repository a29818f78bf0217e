"""Synthesis rules: how higher-multiplicity prototypes are built from singleton prototypes
(THEORY §4, §5, §6), evaluated on any solution `H [T, d]` of a distribution.

With `h_k` the prototype of the singleton `{k}` and `g = Σ_j p_j h_j` (class-frequency
weighted mean of singleton prototypes), for each set `S` with `|S| ≥ 2`:

(a) tag-wise averaging (§5, Li et al. 2024): `h_S ≈ c_S · mean_{k∈S} h_k`, best scalar
    `c_S = ⟨h_S, v⟩/‖v‖²`, `v = mean_{k∈S} h_k`; residual `‖h_S − c_S v‖`.
(b) the frequency-weighted rule (§4, exact for MSE with a free bias):
    `ĥ_S = Σ_{k∈S} h_k − (|S|−1)/(m̄−1) · g`; residual `‖h_S − ĥ_S‖` (needs `m̄ ≠ 1`).
(c) free fit: least squares of `h_S` on the columns `{h_k : k∈S} ∪ {g}` (minimum-norm
    coefficients); residual of the fit; the per-label coefficients `a_{S,k}` and the
    coefficient `c^g_S` on `g`, compared with the §4 values (`a_{S,k} = 1`,
    `c^g_S = −(|S|−1)/(m̄−1)`) and correlated with the class frequencies `p_k` (§6).

Residuals are relative: `‖r_S‖/‖h_S‖`; for a (numerically) zero prototype,
`‖h_S‖ ≤ 1e-12 · max_t ‖h_t‖` (e.g. `m = K` in the symmetric PAL solution), the denominator
is the largest prototype norm `max_t ‖h_t‖` instead.

A free fit is *trivial* when its basis already spans every prototype (`|S| + 1 ≥` the
numerical rank of the prototypes in the support, relative cut 1e-7): e.g. PAL prototypes
live in `Wᵀ 1^⊥`, of dimension `≤ K−1`, so for `K = 4` every pair's fit is exact by
dimension count. Trivial fits keep their residual but are flagged and left out of the
free-fit summary. Rules (b) and (c) need the singleton of
every class with `p_j > 0` (to form `g`); every rule needs the singletons of `S`. A set
where a rule cannot be evaluated gets NaN and a one-line reason; nothing raises.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import InputError
from .labels import LabelDistribution

__all__ = ["SynthesisReport", "synthesis_report", "format_synthesis_summary"]

_ZERO_REL = 1e-12


class SynthesisReport(NamedTuple):
    """Per-set synthesis residuals and coefficients (rows = rows of the distribution).

    `*_reason[s]` is "" where the rule was evaluated on row `s`, else why not (including
    "multiplicity < 2" and "padding row"). `freefit_label_coef [T, K]` holds `a_{S,k}`
    for `k ∈ S` (NaN elsewhere); `freefit_mean_coef` is `c^g_S`; `predicted_mean_coef`
    the §4 value `−(|S|−1)/(m̄−1)`; `freefit_rank` the rank of the fit's basis
    (`|S| + 1` when the coefficients are identifiable); `freefit_trivial` flags fits whose
    basis spans all prototypes (module docstring).
    `summary` (dict of floats): `tagwise_max/median`, `frequency_rule_max/median`,
    `freefit_max/median` (non-trivial fits only; NaN when nothing was evaluated),
    `num_tagwise`, `num_frequency_rule`, `num_freefit` (non-trivial), `num_freefit_trivial`,
    `prototype_rank`, `mean_coef_error_max` (max |c^g_S − §4 value|),
    `mean_coef_ratio_median` (median c^g_S / §4 value), `label_coef_deviation_max`
    (max |a_{S,k} − 1|), `label_coef_freq_corr` (Pearson correlation of `a_{S,k}` with
    `p_k`, pooled over identifiable fits; NaN when `p` or the coefficients are constant),
    `tagwise_scale_median` (median `c_S`).
    """

    sets: list
    multiplicity: np.ndarray
    class_frequencies: np.ndarray
    mean_multiplicity: float
    tagwise_scale: np.ndarray
    tagwise_residual: np.ndarray
    tagwise_reason: list
    frequency_rule_residual: np.ndarray
    frequency_rule_reason: list
    freefit_residual: np.ndarray
    freefit_label_coef: np.ndarray
    freefit_mean_coef: np.ndarray
    predicted_mean_coef: np.ndarray
    freefit_rank: np.ndarray
    freefit_trivial: np.ndarray
    freefit_reason: list
    summary: dict


def _stat(x, fn):
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(fn(x)) if x.size else float("nan")


def synthesis_report(H, dist: LabelDistribution) -> SynthesisReport:
    """Evaluate the synthesis rules (a), (b), (c) of THEORY §4-§6 on prototypes `H [T, d]`
    (rows in the order of `dist`, e.g. `SolveResult.H` or `ClosedForm.params.H`)."""
    H = np.asarray(H, dtype=np.float64)
    Y = np.asarray(dist.label_sets, dtype=np.float64)
    w = np.asarray(dist.weights, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != Y.shape[0]:
        raise InputError(f"H must be [T, d] with T = {Y.shape[0]} rows, got shape {H.shape}")
    T, K = Y.shape
    p = w @ Y
    mbar = float(p.sum())
    mult = Y.sum(1).round().astype(int)
    sets = [tuple(np.flatnonzero(Y[s] > 0.5).tolist()) for s in range(T)]
    single = {}
    for s in range(T):
        if w[s] > 0 and mult[s] == 1:
            single[sets[s][0]] = s
    norms = np.linalg.norm(H, axis=1)
    scale = float(norms[w > 0].max()) if np.any(w > 0) else 0.0
    Hs = H[w > 0]
    proto_rank = int(np.linalg.matrix_rank(Hs, tol=1e-7 * np.linalg.norm(Hs, 2))) \
        if scale > 0 else 0
    missing_for_g = [j for j in range(K) if p[j] > 0 and j not in single]
    g = None
    if not missing_for_g:
        g = np.zeros(H.shape[1])
        for j in range(K):
            if p[j] > 0:
                g = g + p[j] * H[single[j]]

    nan = np.full(T, np.nan)
    tw_c, tw_r, fr_r, ff_r, ff_g = nan.copy(), nan.copy(), nan.copy(), nan.copy(), nan.copy()
    pred = np.where(mult >= 2, -(mult - 1) / (mbar - 1) if mbar != 1 else np.nan, np.nan)
    ff_a = np.full((T, K), np.nan)
    ff_rank = np.zeros(T, dtype=int)
    tw_why, fr_why, ff_why = [""] * T, [""] * T, [""] * T

    for s in range(T):
        S = sets[s]
        why = ""
        if w[s] <= 0:
            why = "padding row"
        elif mult[s] < 2:
            why = "multiplicity < 2"
        elif scale == 0.0:
            why = "all prototypes are zero (collapsed)"
        else:
            miss = [k for k in S if k not in single]
            if miss:
                why = f"singleton {{{miss[0]}}} not in the support"
        if why:
            tw_why[s] = fr_why[s] = ff_why[s] = why
            continue
        hS = H[s]
        den = norms[s] if norms[s] > _ZERO_REL * scale else scale
        Hk = H[[single[k] for k in S]]                        # [|S|, d]
        # (a) tag-wise averaging
        v = Hk.mean(0)
        vv = float(v @ v)
        c = float(v @ hS) / vv if vv > 0 else 0.0
        tw_c[s] = c
        tw_r[s] = np.linalg.norm(hS - c * v) / den
        # (b), (c) need g
        if g is None:
            fr_why[s] = ff_why[s] = f"singleton {{{missing_for_g[0]}}} (p > 0) not in the support"
            continue
        if mbar == 1.0:
            fr_why[s] = "mean multiplicity is 1"
        else:
            fr_r[s] = np.linalg.norm(hS - (Hk.sum(0) - (len(S) - 1) / (mbar - 1) * g)) / den
        B = np.concatenate([Hk, g[None, :]], axis=0).T           # [d, |S|+1]
        coef, _, rank, _ = np.linalg.lstsq(B, hS, rcond=None)
        ff_rank[s] = int(rank)
        ff_r[s] = np.linalg.norm(hS - B @ coef) / den
        ff_a[s, list(S)] = coef[:-1]
        ff_g[s] = coef[-1]

    trivial = np.isfinite(ff_r) & (mult + 1 >= proto_rank)
    ff_nt = np.where(trivial, np.nan, ff_r)
    ident = np.isfinite(ff_r) & (ff_rank == mult + 1) & ~trivial
    a_vals = np.concatenate([ff_a[s, list(sets[s])] for s in np.flatnonzero(ident)]) \
        if ident.any() else np.zeros(0)
    p_vals = np.concatenate([p[list(sets[s])] for s in np.flatnonzero(ident)]) \
        if ident.any() else np.zeros(0)
    corr = float("nan")
    if a_vals.size > 1 and np.std(a_vals) > 1e-12 * max(1.0, np.abs(a_vals).max()) \
            and np.std(p_vals) > 1e-12:
        corr = float(np.corrcoef(a_vals, p_vals)[0, 1])
    gi = ident & np.isfinite(pred)
    summary = {
        "tagwise_max": _stat(tw_r, np.max), "tagwise_median": _stat(tw_r, np.median),
        "frequency_rule_max": _stat(fr_r, np.max), "frequency_rule_median": _stat(fr_r, np.median),
        "freefit_max": _stat(ff_nt, np.max), "freefit_median": _stat(ff_nt, np.median),
        "num_tagwise": int(np.isfinite(tw_r).sum()),
        "num_frequency_rule": int(np.isfinite(fr_r).sum()),
        "num_freefit": int(np.isfinite(ff_nt).sum()),
        "num_freefit_trivial": int(trivial.sum()),
        "prototype_rank": proto_rank,
        "mean_coef_error_max": _stat(np.abs(ff_g[gi] - pred[gi]), np.max),
        "mean_coef_ratio_median": _stat(ff_g[gi] / pred[gi], np.median),
        "label_coef_deviation_max": _stat(np.abs(a_vals - 1.0), np.max),
        "label_coef_freq_corr": corr,
        "tagwise_scale_median": _stat(tw_c, np.median),
    }
    return SynthesisReport(sets, mult, p, mbar, tw_c, tw_r, tw_why, fr_r, fr_why, ff_r, ff_a,
                           ff_g, pred, ff_rank, trivial, ff_why, summary)


def format_synthesis_summary(rep: SynthesisReport) -> str:
    """A few readable lines with the summary of a `SynthesisReport`."""
    s = rep.summary
    return "\n".join([
        f"synthesis over sets with |S| >= 2 (m̄ = {rep.mean_multiplicity:.6g}):",
        f"  tag-wise averaging   max {s['tagwise_max']:.3e}  median {s['tagwise_median']:.3e}"
        f"  ({s['num_tagwise']} sets)",
        f"  frequency rule (§4)  max {s['frequency_rule_max']:.3e}  median "
        f"{s['frequency_rule_median']:.3e}  ({s['num_frequency_rule']} sets)",
        f"  free fit (§6)        max {s['freefit_max']:.3e}  median {s['freefit_median']:.3e}"
        f"  ({s['num_freefit']} sets; {s['num_freefit_trivial']} trivial fits left out)",
        f"  free-fit coefficient on Σ p_j h_j / §4 value: median {s['mean_coef_ratio_median']:.4g};"
        f" max |a_Sk − 1| = {s['label_coef_deviation_max']:.3g};"
        f" corr(a_Sk, p_k) = {s['label_coef_freq_corr']:.3g}",
    ])
