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

from ..model.errors import InputError
from ..model.labels import LabelDistribution

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


class _Prototypes(NamedTuple):
    """What every rule reads: the prototypes, their supports and the weighted mean
    `g = Σ_j p_j h_j` of the singleton prototypes (`None` where a singleton with `p_j > 0`
    is missing, `missing_for_g` naming them)."""

    H: np.ndarray
    sets: list
    mult: np.ndarray
    w: np.ndarray
    p: np.ndarray
    mbar: float
    single: dict
    norms: np.ndarray
    scale: float
    rank: int
    g: np.ndarray | None
    missing_for_g: list


class _SetFit(NamedTuple):
    """The three rules on one row; NaN and a reason where a rule was not evaluated."""

    tagwise_scale: float = np.nan
    tagwise_residual: float = np.nan
    tagwise_reason: str = ""
    frequency_rule_residual: float = np.nan
    frequency_rule_reason: str = ""
    freefit_residual: float = np.nan
    freefit_label_coef: np.ndarray | None = None
    freefit_mean_coef: float = np.nan
    freefit_rank: int = 0
    freefit_reason: str = ""


def _singleton_rows(sets, w, mult) -> dict:
    """`{k: row of the singleton {k}}` over the support."""
    single = {}
    for s in range(len(sets)):
        if w[s] > 0 and mult[s] == 1:
            single[sets[s][0]] = s
    return single


def _prototype_rank(H, w, scale) -> int:
    """Numerical rank of the prototypes in the support (relative cut 1e-7)."""
    if scale <= 0:
        return 0
    Hs = H[w > 0]
    return int(np.linalg.matrix_rank(Hs, tol=1e-7 * np.linalg.norm(Hs, 2)))


def _mean_singleton(H, p, single):
    """`(g, missing)`: `g = Σ_j p_j h_j` (§4), or `None` with the classes `p_j > 0` whose
    singleton is missing."""
    missing = [j for j in range(len(p)) if p[j] > 0 and j not in single]
    if missing:
        return None, missing
    g = np.zeros(H.shape[1])
    for j in range(len(p)):
        if p[j] > 0:
            g = g + p[j] * H[single[j]]
    return g, missing


def _prototypes(H, dist: LabelDistribution) -> _Prototypes:
    """Check `H [T, d]` against `dist` and gather what the rules read."""
    H = np.asarray(H, dtype=np.float64)
    Y = np.asarray(dist.label_sets, dtype=np.float64)
    w = np.asarray(dist.weights, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != Y.shape[0]:
        raise InputError(f"H must be [T, d] with T = {Y.shape[0]} rows, got shape {H.shape}")
    p = w @ Y
    mult = Y.sum(1).round().astype(int)
    sets = [tuple(np.flatnonzero(Y[s] > 0.5).tolist()) for s in range(Y.shape[0])]
    single = _singleton_rows(sets, w, mult)
    norms = np.linalg.norm(H, axis=1)
    scale = float(norms[w > 0].max()) if np.any(w > 0) else 0.0
    g, missing_for_g = _mean_singleton(H, p, single)
    return _Prototypes(H, sets, mult, w, p, float(p.sum()), single, norms, scale,
                       _prototype_rank(H, w, scale), g, missing_for_g)


def _skip_reason(P: _Prototypes, s: int) -> str:
    """Why no rule can be evaluated on row `s` ("" when they can)."""
    if P.w[s] <= 0:
        return "padding row"
    if P.mult[s] < 2:
        return "multiplicity < 2"
    if P.scale == 0.0:
        return "all prototypes are zero (collapsed)"
    miss = [k for k in P.sets[s] if k not in P.single]
    return f"singleton {{{miss[0]}}} not in the support" if miss else ""


def _tagwise(hS, Hk, den):
    """Rule (a), tag-wise averaging (§5): best scale `c_S` and relative residual."""
    v = Hk.mean(0)
    vv = float(v @ v)
    c = float(v @ hS) / vv if vv > 0 else 0.0
    return c, np.linalg.norm(hS - c * v) / den


def _frequency_rule(hS, Hk, g, mbar, den):
    """Rule (b), relative residual of `ĥ_S = Σ_{k∈S} h_k − (|S|−1)/(m̄−1) · g` (§4)."""
    return np.linalg.norm(hS - (Hk.sum(0) - (Hk.shape[0] - 1) / (mbar - 1) * g)) / den


def _free_fit(hS, Hk, g, den):
    """Rule (c), least squares of `h_S` on `{h_k : k∈S} ∪ {g}` (§6): minimum-norm
    coefficients, rank of the basis and relative residual."""
    B = np.concatenate([Hk, g[None, :]], axis=0).T           # [d, |S|+1]
    coef, _, rank, _ = np.linalg.lstsq(B, hS, rcond=None)
    return coef, int(rank), np.linalg.norm(hS - B @ coef) / den


def _fit_set(P: _Prototypes, s: int) -> _SetFit:
    """Rules (a), (b), (c) on row `s`, relative to `‖h_S‖` (or `max_t ‖h_t‖` for a zero
    prototype)."""
    why = _skip_reason(P, s)
    if why:
        return _SetFit(tagwise_reason=why, frequency_rule_reason=why, freefit_reason=why)
    hS = P.H[s]
    den = P.norms[s] if P.norms[s] > _ZERO_REL * P.scale else P.scale
    Hk = P.H[[P.single[k] for k in P.sets[s]]]               # [|S|, d]
    c, tw_r = _tagwise(hS, Hk, den)
    if P.g is None:
        why = f"singleton {{{P.missing_for_g[0]}}} (p > 0) not in the support"
        return _SetFit(c, tw_r, frequency_rule_reason=why, freefit_reason=why)
    if P.mbar == 1.0:
        fr_r, fr_why = np.nan, "mean multiplicity is 1"
    else:
        fr_r, fr_why = _frequency_rule(hS, Hk, P.g, P.mbar, den), ""
    coef, rank, ff_r = _free_fit(hS, Hk, P.g, den)
    return _SetFit(c, tw_r, "", fr_r, fr_why, ff_r, coef[:-1], coef[-1], rank, "")


def _label_coefs(ff_a, sets, p, ident):
    """`(a_{S,k}, p_k)` pooled over the identifiable fits."""
    if not ident.any():
        return np.zeros(0), np.zeros(0)
    rows = np.flatnonzero(ident)
    return (np.concatenate([ff_a[s, list(sets[s])] for s in rows]),
            np.concatenate([p[list(sets[s])] for s in rows]))


def _label_freq_corr(a_vals, p_vals) -> float:
    """Pearson correlation of `a_{S,k}` with `p_k` (§6); NaN when either is constant."""
    if a_vals.size > 1 and np.std(a_vals) > 1e-12 * max(1.0, np.abs(a_vals).max()) \
            and np.std(p_vals) > 1e-12:
        return float(np.corrcoef(a_vals, p_vals)[0, 1])
    return float("nan")


def _summary(rep: SynthesisReport, proto_rank: int) -> dict:
    """`SynthesisReport.summary` from the per-set columns of `rep`."""
    tw_r, fr_r, ff_r, trivial = (rep.tagwise_residual, rep.frequency_rule_residual,
                                 rep.freefit_residual, rep.freefit_trivial)
    ff_g, pred = rep.freefit_mean_coef, rep.predicted_mean_coef
    ff_nt = np.where(trivial, np.nan, ff_r)
    ident = np.isfinite(ff_r) & (rep.freefit_rank == rep.multiplicity + 1) & ~trivial
    a_vals, p_vals = _label_coefs(rep.freefit_label_coef, rep.sets, rep.class_frequencies, ident)
    gi = ident & np.isfinite(pred)
    return {
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
        "label_coef_freq_corr": _label_freq_corr(a_vals, p_vals),
        "tagwise_scale_median": _stat(rep.tagwise_scale, np.median),
    }


def _column(fits, field: str, dtype=np.float64) -> np.ndarray:
    return np.array([getattr(f, field) for f in fits], dtype=dtype)


def synthesis_report(H, dist: LabelDistribution) -> SynthesisReport:
    """Evaluate the synthesis rules (a), (b), (c) of THEORY §4-§6 on prototypes `H [T, d]`
    (rows in the order of `dist`, e.g. `SolveResult.H` or `ClosedForm.params.H`)."""
    P = _prototypes(H, dist)
    T, K = len(P.sets), len(P.p)
    fits = [_fit_set(P, s) for s in range(T)]
    mult, mbar = P.mult, P.mbar
    pred = np.where(mult >= 2, -(mult - 1) / (mbar - 1) if mbar != 1 else np.nan, np.nan)
    ff_a = np.full((T, K), np.nan)
    for s, f in enumerate(fits):
        if f.freefit_label_coef is not None:
            ff_a[s, list(P.sets[s])] = f.freefit_label_coef
    ff_r = _column(fits, "freefit_residual")
    # dimension count alone makes these fits exact (module docstring)
    trivial = np.isfinite(ff_r) & (mult + 1 >= P.rank)
    rep = SynthesisReport(
        P.sets, mult, P.p, mbar, _column(fits, "tagwise_scale"),
        _column(fits, "tagwise_residual"), [f.tagwise_reason for f in fits],
        _column(fits, "frequency_rule_residual"), [f.frequency_rule_reason for f in fits],
        ff_r, ff_a, _column(fits, "freefit_mean_coef"), pred,
        _column(fits, "freefit_rank", int), trivial, [f.freefit_reason for f in fits], {})
    return rep._replace(summary=_summary(rep, P.rank))


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
