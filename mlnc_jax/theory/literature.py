"""Three published exact results, written in the papers' own variables (THEORY §2).

Each function implements a paper's statement from its text with numpy only (no import of
the package's own closed forms), so that agreement with the certified engine is an
independent check. `CONVENTIONS` records how each paper's objective maps onto THEORY §2:
`F = Σ_s π_s ℓ(W h_s + b, y_s) + λ_W/2 ‖W‖² + λ_H/2 Σ_s π_s ‖h_s‖² + λ_b/2 ‖b‖²`.
A paper that writes `λ_H/2 ‖H‖²` over `N` samples next to a `1/N`-averaged loss has
`λ_H(here) = N · λ_H(paper)`; `λ_W` and `λ_b` are the same in all three.

* Zhu et al. (NeurIPS 2021, arXiv 2105.02375), Theorem 3.1: balanced CE with bias.
* Dang et al. (ICML 2023, arXiv 2301.00437): imbalanced MSE, one layer, bias-free.
* Li et al. (ICML 2024, arXiv 2310.15903): PAL, within-multiplicity balanced labels.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["CONVENTIONS", "ZhuETF", "DangMSE", "LiPAL", "zhu_lambda_h_ours",
           "zhu_etf", "zhu_collapse_lambda", "dang_mse", "dang_thresholds",
           "li_pal_constants"]

CONVENTIONS = {
    "Zhu 2021": {
        "objective": "(1/N) Σ_i CE(W h_i + b, y_i) + λ_W/2 ‖W‖² + λ_H/2 ‖H‖² + λ_b/2 ‖b‖², "
                     "N = nK samples",
        "lambda_w": "λ_W", "lambda_h": "N·λ_H", "lambda_b": "λ_b", "bias": True},
    "Fang 2021": {
        "objective": "layer-peeled: (1/N) Σ CE s.t. (1/K)Σ‖w_k‖² ≤ E_W, "
                     "(1/K)Σ_k (1/n_k)Σ_i‖h_{k,i}‖² ≤ E_H (constraints, no bias)",
        "lambda_w": "Lagrange multiplier of E_W",
        "lambda_h": "multiplier of E_H; one λ_H only for equal counts (theory/imbalance.py)",
        "lambda_b": "none", "bias": False},
    "Thrampoulidis 2022": {
        "objective": "Σ_i CE(W h_i, y_i) + λ_W/2 ‖W‖² + λ_H/2 ‖H‖² (sum over N samples), "
                     "λ → 0",
        "lambda_w": "λ_W/N", "lambda_h": "λ_H", "lambda_b": "none", "bias": False},
    "Hong & Ling 2023": {
        "objective": "regularised CE UFM; the minority-collapse threshold stated in THEORY §2 "
                     "variables, n_B/N ≤ λ_W λ_H (theory/imbalance.py)",
        "lambda_w": "λ_W", "lambda_h": "λ_H", "lambda_b": "any", "bias": None},
    "Dang 2023": {
        "objective": "(1/2N) ‖W H − Y‖² + λ_W/2 ‖W‖² + λ_H/2 ‖H‖² (one layer, no bias)",
        "lambda_w": "λ_W", "lambda_h": "N·λ_H", "lambda_b": "none", "bias": False},
    "Li 2024": {
        "objective": "(1/N) Σ_i PAL(W h_i + b, y_i) + λ_W/2 ‖W‖² + λ_H/2 ‖H‖² + λ_b/2 ‖b‖²",
        "lambda_w": "λ_W", "lambda_h": "N·λ_H", "lambda_b": "λ_b", "bias": True},
}


def zhu_lambda_h_ours(K: int, n: int, lambda_h_paper: float) -> float:
    """THEORY §2 feature penalty for Zhu et al.'s `λ_H` (penalty on the whole `H`, N = nK)."""
    return float(n * K * lambda_h_paper)


def _bisect(f, lo, hi, iters: int = 200):
    """Root of an increasing `f` on `[lo, hi]` (`f(lo) < 0 < f(hi)`), elementwise for arrays;
    200 halvings reach the last bit of any float64 bracket."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        neg = f(mid) < 0
        lo, hi = np.where(neg, mid, lo), np.where(neg, hi, mid)
    return 0.5 * (lo + hi)


class ZhuETF(NamedTuple):
    """Zhu et al. (2021) Theorem 3.1, in the paper's variables.

    `w_norm = ‖w_k‖`, `h_norm = ‖h_{k,i}‖`, `ratio = ‖h‖/‖w‖ = √(λ_W/(nλ_H))`, `b` the
    common bias entry (`b = b·1`; 0 when `λ_b > 0`, free when `λ_b = 0`), `collapsed`.
    """

    w_norm: float
    h_norm: float
    ratio: float
    b: float
    collapsed: bool


def zhu_collapse_lambda(K: int, n: int, lambda_w: float) -> float:
    """Zhu et al. (2021): the paper's `λ_H` above which every minimiser is `W = H = 0`.

    The ETF branch exists iff `K √(n λ_W λ_H) < 1` (stationarity of the scalar problem of
    Theorem 3.1 at `‖w‖ = 0`), i.e. `λ_H < 1/(n K² λ_W)`; in THEORY §2 variables this is
    the §3 threshold `λ_W λ_H(here) = λ_max(C) = 1/K`.
    """
    return 1.0 / (n * K * K * lambda_w)


def zhu_etf(K: int, n: int, lambda_w: float, lambda_h: float,
            lambda_b: float = 0.0) -> ZhuETF:
    """Zhu et al. (2021) Theorem 3.1 (balanced CE, `n` samples per class, bias).

    Every global minimiser has `W` a simplex ETF (`‖w_k‖² = ρ`, `w_jᵀw_k = −ρ/(K−1)`),
    `h_{k,i} = √(λ_W/(nλ_H)) w_k` and `b = b·1`. With `c = √(λ_W/(nλ_H))`,
    `a = cK/(K−1)`, the objective restricted to this family is
    `log(1 + (K−1) e^{−aρ}) + λ_W K ρ`, whose stationarity gives
    `e^{−aρ} = λ_W K / ((K−1)(a − λ_W K))` in closed form.
    """
    c = math.sqrt(lambda_w / (n * lambda_h))
    a = c * K / (K - 1)
    if lambda_h >= zhu_collapse_lambda(K, n, lambda_w):
        return ZhuETF(0.0, 0.0, c, 0.0, True)
    q = lambda_w * K / ((K - 1) * (a - lambda_w * K))
    rho = -math.log(q) / a
    return ZhuETF(math.sqrt(rho), c * math.sqrt(rho), c, 0.0, False)


class DangMSE(NamedTuple):
    """Dang et al. (2023), one-layer bias-free imbalanced MSE, paper variables.

    `w_sq[k] = ‖w_k‖²`, `h_sq[k] = ‖h_k‖²` (class mean feature), `margin[k] = w_kᵀh_k`;
    classifiers mutually orthogonal, `h_k ∥ w_k`; `dead[k]` when `w_k = h_k = 0`.
    """

    w_sq: np.ndarray
    h_sq: np.ndarray
    margin: np.ndarray
    dead: np.ndarray


def dang_thresholds(counts, lambda_w: float, lambda_h: float) -> np.ndarray:
    """Dang et al. (2023): class `k` is dead (`w_k = 0`) iff `n_k ≤ N² λ_W λ_H` (paper λ)."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts <= counts.sum() ** 2 * lambda_w * lambda_h


def dang_mse(counts, lambda_w: float, lambda_h: float) -> DangMSE:
    """Dang et al. (2023), imbalanced MSE, one layer without bias.

    With `s = N √(λ_W λ_H)` (paper λ's, `N = Σ n_k`):
    `‖w_k‖² = √(λ_H/λ_W) (√n_k − s)_+`, `‖h_k‖² = √(λ_W/λ_H) (√n_k − s)_+ / n_k`,
    `w_kᵀ h_k = (1 − s/√n_k)_+`, `w_jᵀw_k = 0` for `j ≠ k` (orthogonal frame, not an ETF).
    In THEORY §2 variables (`λ_H(here) = Nλ_H`, `π_k = n_k/N`) this is the soft-threshold
    `w_kᵀh_k = (1 − √(λ_W λ_H(here)/π_k))_+`.
    """
    counts = np.asarray(counts, dtype=np.float64)
    s = counts.sum() * math.sqrt(lambda_w * lambda_h)
    gap = np.maximum(np.sqrt(counts) - s, 0.0)
    return DangMSE(math.sqrt(lambda_h / lambda_w) * gap,
                   math.sqrt(lambda_w / lambda_h) * gap / counts,
                   np.maximum(1.0 - s / np.sqrt(counts), 0.0),
                   dang_thresholds(counts, lambda_w, lambda_h))


class LiPAL(NamedTuple):
    """Li et al. (2024) M-lab NC constants: `rho = ‖w_k‖²`, `alpha[m]` with
    `h_S = α_m Σ_{k∈S} w_k`, `gap[m] = α_m ρ K/(K−1)` (in-set minus out-of-set logit),
    `collapsed`, `threshold` (collapse value of `λ_W λ_H`, THEORY §2 λ's)."""

    rho: float
    alpha: dict
    gap: dict
    collapsed: bool
    threshold: float


def _li_betas(K: int, ms: np.ndarray, rho: float, lambda_h: float) -> np.ndarray:
    """Inner minimiser `β_m = α_m ρ` at fixed `ρ` (each 1-D strictly convex; bisection)."""
    kap = K / (K - 1)

    def grad(beta):
        e = np.exp(-beta * kap)
        return -kap * e / (ms + (K - ms) * e) + lambda_h * beta / ((K - 1) * rho)

    return _bisect(grad, np.zeros_like(ms), kap * (K - 1) * rho / (lambda_h * ms))


def li_pal_constants(K: int, masses: dict, lambda_w: float, lambda_h: float) -> LiPAL:
    """Li et al. (2024), M-lab NC (their main theorem) for PAL under within-multiplicity
    balanced labels (every m-subset equally likely given m, masses `π(m)`).

    `W` is a simplex ETF with `‖w_k‖² = ρ`, `h_S = α_m Σ_{k∈S} w_k`, where `(ρ, α)`
    minimise `Σ_m π(m) m log(m + (K−m) e^{−α_m ρ K/(K−1)}) + λ_H/2 Σ_m π(m) α_m² ρ
    m(K−m)/(K−1) + λ_W K ρ/2` (`λ_H` of THEORY §2, i.e. `N·λ_H` of the paper). Solved by
    nested bisection: at fixed `ρ` each `β_m = α_m ρ` solves a 1-D convex problem; the value
    is convex in `ρ` (partial minimum of a perspective), so its envelope derivative
    `λ_W K/2 − λ_H/2 Σ π(m) β_m² m(K−m)/((K−1)ρ²)` is increasing and is bisected too.
    `m = K` sets have `h_S = 0` (`α = 0`); collapse iff `λ_W λ_H ≥ Σ π(m) m(K−m)/(K(K−1))`.
    """
    inner = sorted(m for m, p in masses.items() if 0 < m < K and p > 0)
    ms = np.array(inner, dtype=np.float64)
    pm = np.array([masses[m] for m in inner], dtype=np.float64)
    weight = pm * ms * (K - ms) / (K - 1)
    thr = float(np.sum(weight) / K)
    if lambda_w * lambda_h >= thr:
        return LiPAL(0.0, {m: 0.0 for m in inner}, {m: 0.0 for m in inner}, True, thr)

    def dv(rho):
        beta = _li_betas(K, ms, rho, lambda_h)
        return lambda_w * K - lambda_h * np.sum(weight * beta**2) / rho**2

    hi = 1.0
    while dv(hi) < 0:
        hi *= 2.0
    rho = float(_bisect(dv, 0.0, hi))
    beta = _li_betas(K, ms, rho, lambda_h)
    kap = K / (K - 1)
    return LiPAL(rho, {m: float(b / rho) for m, b in zip(inner, beta)},
                 {m: float(b * kap) for m, b in zip(inner, beta)}, False, thr)
