"""Stability of the terminal geometry, comparable with the label spectra of THEORY §1, §6.

**Contrast separation.** For logits `z_s = W h_s + b` and a multiplicity `m`,

    σ_m = min_{u⊥1, |u|=1} Var(uᵀz | |S| = m) = λ_min(Cov_m(z) |_{1^⊥}),
    Cov_m(z) = Σ_{|S|=m} π_s (z_s − z̄_m)(z_s − z̄_m)ᵀ / π(m),  z̄_m = Σ_{|S|=m} π_s z_s / π(m),

and `σ = λ_min(Cov(z)|_{1^⊥})` over the whole distribution (π-weighted mean and covariance).
It is the label-space twin of `κ_m = λ_min(C_m|_{1^⊥})` (§1), which is the same quantity with
`z_s` replaced by `y_s`: the variance of the weakest centred contrast the model can still
tell apart. A collapsed solution has `σ_m = 0`.

Relation to `κ_m` for the MSE closed form with free bias (§4): `z_s = B y_s + const`,
`B = Σ_j φ_j u_j u_jᵀ`, so `Cov_m(z) = B C_m B` and, since `C_m 1 = 0`,

    σ_m = min_{u⊥1,|u|=1} (PBu)ᵀ C_m (PBu)  ≥  κ_m · s_min(P B |_{1^⊥})²,

with equality `σ_m = φ² κ_m`, `φ = (1 − τ/√κ)_+`, when `C ∝ P` on `1^⊥` (e.g. all
m-subsets equally likely, where `C_m = κ_m P`): shrinkage `φ` of the weakest direction times
the label spectrum. Directions with `λ_j ≤ τ²` are switched off (`φ_j = 0`), so `σ_m` can
vanish while `κ_m > 0`.

**Prototype spread.** `centred_singular_values`: singular values of the centred prototype
matrix `H_c = [h_s − h̄]_s` (rows of the support, unweighted), `h̄ = Σ_s π_s h_s` the
π-weighted (per-sample) global mean; optionally rows scaled by `√π_s`. The smallest
non-zero one (relative cut `rtol · s_max`, default 1e-5: a solve to ‖∇F‖ ≤ 1e-10 leaves
residues of about 1e-6 in unused feature directions) measures the weakest direction in which the
prototypes are spread. `min_pair_separation`: `min_{s≠t} ‖h_s − h_t‖` over the support.

All array functions are pure (jax.numpy for jax arrays, jit / vmap; numpy for numpy
arrays); zero-weight padding rows drop out.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from ..model.labels import LabelDistribution
from ..theory.spectra import (
    array_module,
    contrast_basis,
    contrast_spectrum,
    multiplicity_onehot,
    spectrum_arrays,
)

__all__ = ["ContrastSeparation", "GeometryStability", "contrast_separation",
           "centred_singular_values", "min_pair_separation", "geometry_stability",
           "mse_contrast_shrinkage"]


class ContrastSeparation(NamedTuple):
    """`σ_m` (`[K+1]`, NaN for absent multiplicities), `σ` (all sets), and the full
    ascending spectra of `Cov_m(z)|_{1^⊥}` (`[K+1, K−1]`) and `Cov(z)|_{1^⊥}` (`[K−1]`)."""

    per_multiplicity: jax.Array
    overall: jax.Array
    spectrum: jax.Array
    spectrum_all: jax.Array


def contrast_separation(logits, label_sets, weights) -> ContrastSeparation:
    """Contrast separation `σ_m`, `σ` of the logits `z [T, K]` (module docstring)."""
    xp = array_module(logits, label_sets, weights)
    z = xp.asarray(logits)
    label_sets = xp.asarray(label_sets, dtype=z.dtype)
    weights = xp.asarray(weights, dtype=z.dtype)
    E = multiplicity_onehot(label_sets, weights)
    wm = E * weights[:, None]
    mass = xp.sum(wm, 0)
    inv = xp.where(mass > 0, 1.0 / xp.where(mass > 0, mass, 1.0), 0.0)
    zm = (wm.T @ z) * inv[:, None]
    Mz = xp.einsum("sm,sk,sl->mkl", wm, z, z) * inv[:, None, None]
    Cm = Mz - zm[:, :, None] * zm[:, None, :]
    zbar = weights @ z
    C = (z * weights[:, None]).T @ z - zbar[:, None] * zbar[None, :]
    spec = xp.where((mass > 0)[:, None], contrast_spectrum(Cm), xp.nan)
    spec_all = contrast_spectrum(C)
    return ContrastSeparation(spec[:, 0], spec_all[0], spec, spec_all)


def centred_singular_values(H, weights, *, weighted: bool = False, rtol: float = 1e-5):
    """`(singular values [min(T, d)] descending, smallest non-zero, numerical rank)` of
    `H_c = [h_s − h̄]_s`, `h̄ = Σ_s π_s h_s`; rows scaled by `√π_s` when `weighted`.
    Padding rows (π_s = 0) are zeroed. Smallest non-zero: smallest `s_i > rtol · s_max`
    (NaN when all vanish)."""
    xp = array_module(H, weights)
    H = xp.asarray(H)
    weights = xp.asarray(weights, dtype=H.dtype)
    hbar = weights @ H
    Hc = (H - hbar) * (weights > 0)[:, None]
    if weighted:
        Hc = Hc * xp.sqrt(weights)[:, None]
    s = xp.linalg.svd(Hc, compute_uv=False)
    nz = s > rtol * s[0]
    smin = xp.where(xp.any(nz), xp.min(xp.where(nz, s, xp.inf)), xp.nan)
    return s, smin, xp.sum(nz)


def min_pair_separation(H, weights):
    """`min_{s≠t, π_s, π_t > 0} ‖h_s − h_t‖` (inf with fewer than two sets)."""
    xp = array_module(H, weights)
    H = xp.asarray(H)
    weights = xp.asarray(weights, dtype=H.dtype)
    D = xp.sqrt(xp.maximum(xp.sum((H[:, None, :] - H[None, :, :]) ** 2, -1), 0.0))
    ok = (weights[:, None] > 0) & (weights[None, :] > 0) & ~xp.eye(H.shape[0], dtype=bool)
    return xp.min(xp.where(ok, D, xp.inf))


class GeometryStability(NamedTuple):
    """Host-side summary (numpy): contrast separation `σ_m` ({m: value}) and `σ`, the label
    spectra `κ_m` ({m: value}) and `κ` next to them, the ratios `σ_m/κ_m`, the centred
    prototype singular values (π-weighted mean, unweighted rows), their smallest non-zero
    value and rank, and the smallest pairwise prototype distance."""

    contrast_separation: dict
    contrast_separation_all: float
    kappa: dict
    kappa_all: float
    ratio: dict
    singular_values: np.ndarray
    smallest_singular_value: float
    rank: int
    min_pair_separation: float


def geometry_stability(W, H, b, dist: LabelDistribution) -> GeometryStability:
    """`GeometryStability` of a solution `(W, H, b)` (use `b = 0` without a bias); numpy
    float64 on the host."""
    W, H, b = (np.asarray(x, dtype=np.float64) for x in (W, H, b))
    Y = np.asarray(dist.label_sets, dtype=np.float64)
    w = np.asarray(dist.weights, dtype=np.float64)
    z = H @ W.T + b
    cs = contrast_separation(z, Y, w)
    sp = spectrum_arrays(Y, w)
    ms = [int(m) for m in np.flatnonzero(sp.multiplicity_mass > 0)]
    sig = {m: float(cs.per_multiplicity[m]) for m in ms}
    kap = {m: float(sp.kappa[m]) for m in ms}
    ratio = {m: (sig[m] / kap[m] if kap[m] > 1e-14 else float("nan")) for m in ms}
    s, smin, rank = centred_singular_values(H, w)
    return GeometryStability(sig, float(cs.overall), kap, float(sp.kappa_all), ratio,
                             s, float(smin), int(rank), float(min_pair_separation(H, w)))


def mse_contrast_shrinkage(eigenvalues, eigenvectors, tau: float) -> float:
    """`s_min(P B|_{1^⊥})²`, `B = Σ_j φ_j u_j u_jᵀ`, `φ_j = (1 − τ/√λ_j)_+` from the §4
    eigenpairs of `Σ` (THEORY §4): the factor of the MSE bound `σ_m ≥ κ_m · s_min²` (module
    docstring)."""
    lam, U = np.asarray(eigenvalues), np.asarray(eigenvectors)
    phi = np.where(lam > tau**2, 1 - tau / np.sqrt(np.maximum(lam, 1e-300)), 0.0)
    Q = contrast_basis(U.shape[0])
    return float(np.linalg.svd(Q.T @ ((U * phi) @ U.T) @ Q, compute_uv=False).min() ** 2)
