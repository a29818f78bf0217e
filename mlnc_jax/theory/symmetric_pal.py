"""PAL / PAL-N closed form in the symmetric case of Li et al. (2024) (THEORY §5).

A distribution is *symmetric* when, for each multiplicity `m` present, every m-subset of
the `K` classes is in the support with the same weight `π(m)/C(K, m)`. Then, for `d ≥ K−1`,
the UFM optimum has `b = 0`, a simplex-ETF classifier with `‖w_k‖² = ρ`
(`W Wᵀ = ρ K/(K−1) · P`, `P = I − 11ᵀ/K`) and tag-wise averaged prototypes
`h_S = α_m Σ_{k∈S} w_k` (`h_S = 0` for `m = K` and `m = 0`), with `(ρ, α_m)` minimising

    Σ_m π(m) c_m [ m·log(m + (K−m)·exp(−α_m ρ K/(K−1))) ] + λ_H/2 Σ_m π(m) α_m² ρ m(K−m)/(K−1)
      + λ_W/2 · K ρ,

`c_m = 1` (`pal`) or `1/m` (`pal_normalized`: loss term divided by `m`).

Solving the scalar problem. With `β_m = α_m ρ` the regulariser is
`λ_H/2 Σ_m D_m² β_m²/ρ + λ_W K ρ/2`, `D_m² = π(m) m(K−m)/(K−1)`, jointly convex in
`(β, ρ > 0)` (a perspective); minimising over `ρ` gives `ρ = √(λ_H/(λ_W K)) ‖Dβ‖` and the
convex problem in `β` alone

    g(β) = Σ_m π(m) c_m L_m(β_m) + √(λ_W λ_H K) ‖Dβ‖,   L_m(β) = m·log(m + (K−m) e^{−βK/(K−1)}).

`β = 0` (the collapsed solution `W = 0, H = 0`) is optimal iff
`λ_W λ_H ≥ Σ_m π(m) c_m² m(K−m)/(K(K−1))`, which is the §3 collapse threshold of the
symmetric distribution. Otherwise `g` is smooth and strictly convex near its minimiser and
damped Newton (Armijo backtracking, started on the steepest ray out of `0`) converges to
machine precision in float64.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..model.checks import check_has_labels
from ..model.errors import InputError
from ..model.labels import LabelDistribution
from ..model.losses import get_loss, pal, pal_normalized
from ..model.ufm import ClosedForm, UFMConfig, UFMParams
from .thresholds import collapse_gradients

__all__ = ["SymmetricPAL", "is_symmetric", "symmetric_pal", "symmetric_pal_closed_form",
           "symmetric_pal_scalar_objective", "symmetric_collapse_threshold"]

# c_m of THEORY §5: the loss term per multiplicity (pal_normalized divides it by m)
_MULTIPLICITY_SCALE = {pal: lambda m: np.ones_like(m), pal_normalized: lambda m: 1.0 / m}


class SymmetricPAL(NamedTuple):
    """Symmetric PAL prediction (THEORY §5).

    `rho = ‖w_k‖²`; `alpha[m] = α_m` (`h_S = α_m Σ_{k∈S} w_k`; 0 for `m ∈ {0, K}` where
    `h_S = 0`); `collapsed` when `ρ = 0`; `threshold` the collapse value of
    `λ_W λ_H`; `newton_iterations` of the scalar solve; `closed_form` the full
    `ClosedForm` (same layout as the MSE one).
    """

    rho: float
    alpha: dict
    collapsed: bool
    threshold: float
    objective: float
    newton_iterations: int
    closed_form: ClosedForm


def _support(dist: LabelDistribution):
    Y = np.asarray(dist.label_sets, dtype=np.float64)
    w = np.asarray(dist.weights, dtype=np.float64)
    keep = w > 0
    return Y[keep], w[keep], keep


def is_symmetric(dist: LabelDistribution, tol: float = 1e-12) -> tuple[bool, str]:
    """`(True, "symmetric")` if every multiplicity present has all `C(K, m)` m-subsets with
    equal weight (relative spread `(max − min)/max ≤ tol`), else `(False, reason)` with a
    one-line reason such as "multiplicity 2 has 7 of 10 subsets" (THEORY §5)."""
    Y, w, _ = _support(dist)
    K = dist.num_classes
    m = Y.sum(1).round().astype(int)
    for mm in np.unique(m):
        n = int(np.sum(m == mm))
        total = math.comb(K, int(mm))
        if n != total:
            return False, f"multiplicity {mm} has {n} of {total} subsets"
        ws = w[m == mm]
        if ws.max() - ws.min() > tol * ws.max():
            return False, (f"unequal weights within multiplicity {mm} "
                           f"(min {ws.min():.6g}, max {ws.max():.6g})")
    return True, "symmetric"


def _coef(loss, m):
    """`c_m` of THEORY §5 for `pal` (1) or `pal_normalized` (1/m)."""
    scale = _MULTIPLICITY_SCALE.get(get_loss(loss))
    if scale is None:
        raise InputError(f"the symmetric closed form is for 'pal' or 'pal_normalized', not "
                         f"{get_loss(loss).name!r}")
    return scale(np.asarray(m, dtype=np.float64))


def symmetric_pal_scalar_objective(rho, alpha: dict, masses: dict, num_classes: int, loss: str,
                                   lambda_w: float, lambda_h: float) -> float:
    """The scalar objective of THEORY §5 at `(ρ, {α_m})` for multiplicity masses `{m: π(m)}`
    (equals the UFM objective of the realisation with `b = 0`)."""
    K = num_classes
    val = 0.5 * lambda_w * K * rho
    for m, pm in masses.items():
        if m == 0:
            continue
        a = float(alpha.get(m, 0.0))
        t = a * rho * K / (K - 1)
        c = float(_coef(loss, m))
        # m·log(m + (K−m) e^{−t}) = m·(log m + softplus(log((K−m)/m) − t))
        if m < K:
            loss_m = m * (math.log(m) + np.logaddexp(0.0, math.log((K - m) / m) - t))
        else:
            loss_m = m * math.log(m)
        val += pm * (c * loss_m + 0.5 * lambda_h * a * a * rho * m * (K - m) / (K - 1))
    return float(val)


def symmetric_collapse_threshold(masses: dict, num_classes: int, loss: str) -> float:
    """`Σ_m π(m) c_m² m(K−m)/(K(K−1))`: `W = 0` is optimal iff `λ_W λ_H ≥` this (THEORY §3
    specialised to §5; equals `thresholds.collapse_threshold` on a symmetric distribution)."""
    K = num_classes
    return float(sum(pm * float(_coef(loss, m)) ** 2 * m * (K - m) / (K * (K - 1))
                     for m, pm in masses.items() if 0 < m))


class _BetaProblem(NamedTuple):
    """`g(β)` of THEORY §5 over the active multiplicities `0 < m < K`."""

    ms: np.ndarray
    pim: np.ndarray
    c: np.ndarray
    kap: float
    D2: np.ndarray
    shift: np.ndarray
    tau_k: float


def _beta_problem(ms, pim, c, K, tau_k) -> _BetaProblem:
    """`κ = K/(K−1)`, `D_m² = π(m) m(K−m)/(K−1)` and `log((K−m)/m)` of THEORY §5."""
    return _BetaProblem(ms, pim, c, K / (K - 1), pim * ms * (K - ms) / (K - 1),
                        np.log((K - ms) / ms), tau_k)


def _g(P: _BetaProblem, beta) -> float:
    """`g(β) = Σ π c L_m(β) + tau_k ‖Dβ‖` (THEORY §5)."""
    smooth = float(np.sum(P.pim * P.c * P.ms
                          * (np.log(P.ms) + np.logaddexp(0.0, P.shift - P.kap * beta))))
    return smooth + P.tau_k * math.sqrt(float(np.sum(P.D2 * beta**2)))


def _grad_hess(P: _BetaProblem, beta):
    """Gradient and Hessian of `g` at `β ≠ 0`."""
    q = 1.0 / (1.0 + np.exp(-(P.shift - P.kap * beta)))   # (K−m)e^{−κβ}/(m + (K−m)e^{−κβ})
    gs = -P.pim * P.c * P.ms * P.kap * q
    hs = P.pim * P.c * P.ms * P.kap**2 * q * (1.0 - q)
    n = math.sqrt(float(np.sum(P.D2 * beta**2)))
    Db = P.D2 * beta
    gr = gs + P.tau_k * Db / n
    He = np.diag(hs + P.tau_k * P.D2 / n) - P.tau_k * np.outer(Db, Db) / n**3
    return gr, He


def _ray_start(P: _BetaProblem):
    """Best point, by golden section, on the steepest ray `v = −D^{-2} ∇S(0)` out of 0."""
    # ∇S(0)_m = −π(m) c_m m(K−m)/(K−1) = −D_m² c_m, so v = c
    v = P.c / np.linalg.norm(P.c)
    lo, hi = 0.0, 1.0
    while _g(P, hi * v) < _g(P, 0.5 * hi * v) and hi < 1e6:
        hi *= 2.0
    gr_ = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    for _ in range(80):
        x1, x2 = b - gr_ * (b - a), a + gr_ * (b - a)
        if _g(P, x1 * v) < _g(P, x2 * v):
            b = x2
        else:
            a = x1
    return 0.5 * (a + b) * v


def _armijo(P: _BetaProblem, beta, f, step, dec):
    """Backtracking along the Newton step: `(t, β + t·step, g(β + t·step))`."""
    t = 1.0
    while True:
        nb = beta + t * step
        fn = _g(P, nb)
        if fn <= f - 1e-4 * t * dec or t < 1e-12:
            return t, nb, fn
        t *= 0.5


def _solve_beta(ms, pim, c, K, tau_k, max_iter=200):
    """Minimise `g(β) = Σ π c L_m(β) + tau_k ‖Dβ‖` (non-collapsed case) by damped Newton."""
    P = _beta_problem(ms, pim, c, K, tau_k)
    beta = _ray_start(P)
    f = _g(P, beta)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        gr, He = _grad_hess(P, beta)
        step = np.linalg.solve(He, -gr)
        dec = float(-gr @ step)
        if dec <= 1e-30 * max(1.0, abs(f)) or not np.isfinite(dec):
            break
        t, nb, fn = _armijo(P, beta, f, step, dec)
        if fn > f:  # no progress possible at machine precision
            break
        beta, f = nb, fn
        if dec < 1e-26 and t == 1.0:
            break
    return beta, it


def _checked_config(dist: LabelDistribution, config: UFMConfig, tol: float) -> UFMConfig:
    """The validated `config`, or `InputError` naming why there is no symmetric closed form."""
    config = config.validate()
    _coef(config.loss, 1)  # refuses other losses
    K = dist.num_classes
    if K < 2:
        raise InputError("the symmetric PAL closed form needs K >= 2 classes")
    check_has_labels(dist, "the symmetric PAL closed form")
    ok, reason = is_symmetric(dist, tol)
    if not ok:
        raise InputError(f"no closed form for loss {config.loss!r}: not symmetric: {reason}")
    if config.dim < K - 1:
        raise InputError(f"the symmetric PAL closed form needs dim >= K-1 = {K - 1}, got {config.dim}")
    undefined = config.loss_record.domain_error(np.asarray(dist.label_sets, dtype=np.float64),
                                                np.asarray(dist.weights, dtype=np.float64))
    if undefined:
        raise InputError(undefined)
    return config


def _rows(dist: LabelDistribution):
    """`(Y, weights, multiplicities)` of every row, padding included."""
    Y = np.asarray(dist.label_sets, dtype=np.float64)
    return Y, np.asarray(dist.weights, dtype=np.float64), Y.sum(1).round().astype(int)


def _multiplicity_masses(dist: LabelDistribution) -> dict:
    """`{m: π(m)}` over the multiplicities in the support."""
    _, wall, mrow = _rows(dist)
    return {int(m): float(wall[(mrow == m) & (wall > 0)].sum())
            for m in np.unique(mrow[wall > 0])}


def _scalar_solution(masses: dict, K: int, loss, lw: float, lh: float, thr: float):
    """`(ρ, {α_m}, collapsed, Newton iterations)`: `ρ = √(λ_H/(λ_W K)) ‖Dβ‖`,
    `α_m = β_m/ρ` (THEORY §5)."""
    active = [m for m in sorted(masses) if 0 < m < K]
    alpha = {m: 0.0 for m in masses}
    if not active or lw * lh >= thr:
        return 0.0, alpha, True, 0
    ms = np.array(active, dtype=np.float64)
    pim = np.array([masses[m] for m in active])
    c = _coef(loss, ms)
    beta, iters = _solve_beta(ms, pim, c, K, math.sqrt(lw * lh * K))
    D2 = pim * ms * (K - ms) / (K - 1)
    rho = math.sqrt(lh / (lw * K)) * math.sqrt(float(np.sum(D2 * beta**2)))
    if rho > 0:
        alpha.update({m: float(bm / rho) for m, bm in zip(active, beta)})
    return rho, alpha, not rho > 0, iters


def _collapse_covariance_eigh(dist: LabelDistribution, loss):
    """Eigenpairs of the §3 collapse gradient covariance `Σ⁰ = Σ_s π_s g⁰_s g⁰_sᵀ` (= thr·P)."""
    Ys, ws, _ = _support(dist)
    g0 = collapse_gradients(LabelDistribution(Ys, ws, dist.num_classes), loss)
    S0 = (g0 * ws[:, None]).T @ g0
    return np.linalg.eigh(0.5 * (S0 + S0.T))


def _realise(dist: LabelDistribution, config: UFMConfig, rho: float, alpha: dict,
             collapsed: bool, objective: float) -> ClosedForm:
    """`W = √(ρK/(K−1)) Q` embedded in R^d, `h_S = α_m y_Sᵀ W`, `b = 0` (THEORY §5)."""
    K = dist.num_classes
    Yall, wall, mrow = _rows(dist)
    W = np.zeros((K, config.dim))
    W[:, : K - 1] = math.sqrt(rho * K / (K - 1)) * _helmert(K)
    a_row = np.array([alpha.get(int(m), 0.0) if wi > 0 else 0.0 for m, wi in zip(mrow, wall)])
    H = a_row[:, None] * (Yall @ W)
    b = np.zeros(K)
    P = np.eye(K) - 1.0 / K
    gram_W = rho * K / (K - 1) * P
    inter = Yall @ Yall.T
    gram_H = np.outer(a_row, a_row) * rho * (K * inter - np.outer(mrow, mrow)) / (K - 1)
    logits = (a_row * rho * K / (K - 1))[:, None] * (Yall - mrow[:, None] / K)
    lam, U = _collapse_covariance_eigh(dist, config.loss)
    return ClosedForm(gram_W, gram_H, logits, b, objective, 0 if collapsed else K - 1,
                      UFMParams(W, H, b), lam, U)


def symmetric_pal(dist: LabelDistribution, config: UFMConfig, *, tol: float = 1e-12) -> SymmetricPAL:
    """Solve the symmetric PAL / PAL-N problem of THEORY §5 and realise it (float64 numpy).

    Raises `InputError` when the loss is not `pal`/`pal_normalized`, when `d < K−1`, when the
    distribution is not symmetric (one line naming the condition), or for `pal_normalized`
    with the empty set. The bias is `b = 0` (free, penalised or absent alike).
    """
    config = _checked_config(dist, config, tol)
    K = dist.num_classes
    masses = _multiplicity_masses(dist)
    lw, lh = config.lambda_w, config.lambda_h
    thr = symmetric_collapse_threshold(masses, K, config.loss)
    rho, alpha, collapsed, iters = _scalar_solution(masses, K, config.loss, lw, lh, thr)
    F = symmetric_pal_scalar_objective(rho, alpha, masses, K, config.loss, lw, lh)
    cf = _realise(dist, config, rho, alpha, collapsed, F)
    return SymmetricPAL(float(rho), alpha, bool(collapsed), thr, F, iters, cf)


def symmetric_pal_closed_form(dist: LabelDistribution, config: UFMConfig) -> ClosedForm:
    """`ClosedForm` of the symmetric PAL / PAL-N solution (THEORY §5); see `symmetric_pal`.

    `eigenvalues`/`eigenvectors` are those of the §3 collapse gradient covariance
    `Σ_s π_s g⁰_s g⁰_sᵀ` (ascending); `rank` is `K−1`, or 0 when collapsed.
    """
    return symmetric_pal(dist, config).closed_form


def _helmert(K: int) -> np.ndarray:
    from .spectra import contrast_basis

    return contrast_basis(K)
