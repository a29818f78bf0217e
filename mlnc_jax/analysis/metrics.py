"""Neural-collapse metrics following Li et al. (ICML 2024, "Neural collapse in multi-label
learning with pick-all-label loss"), THEORY §7. Pure jnp functions on arrays (jit / vmap).

Notation: `P = I − 11ᵀ/K` (`‖P‖_F = √(K−1)`), the simplex-ETF Gram shape. Each function
states which global mean it uses; in the symmetric PAL solution (§5) all of them coincide
(0). "Weighted" means the per-sample global mean, i.e. `Σ_s π_s h_s` in the reduced form.

- NC1 (per-sample features, within- vs between-label-set variability):
  `NC1 = tr(Σ_W Σ_B^†)/T'`.
- NC2 for the classifier: `‖W Wᵀ/‖W Wᵀ‖_F − P/‖P‖_F‖_F`; for the singleton means
  `M̃ = [h_k − μ]_k` the same with `M̃ M̃ᵀ`.
- NC3 (self-duality): `‖W/‖W‖_F − M̃/‖M̃‖_F‖_F`.
- Tag-wise angle: `∠(h_S − μ, mean_{k∈S}(h_k − μ))` for `|S| ≥ 2`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..model.errors import InputError
from ..theory.spectra import array_module

__all__ = ["nc1", "between_set_whitener", "within_between_ratio", "nc2_classifier", "nc2_features", "nc3", "singleton_means", "weighted_mean",
           "tagwise_angles", "NCMetrics", "nc_metrics", "tagwise_residuals",
           "simplex_etf_distance"]


def _etf_target(K, dtype):
    return (jnp.eye(K, dtype=dtype) - 1.0 / K) / jnp.sqrt(jnp.asarray(K - 1, dtype))


def _safe_normalize(A):
    n = jnp.linalg.norm(A)
    return A / jnp.where(n > 0, n, 1.0)


def between_set_whitener(means, counts):
    """`(L [d, d], T')` with `Σ_B^† = L Lᵀ` (the pseudo-inverse of `nc1`'s `Σ_B`, cut as
    numpy's and JAX's `pinv`: eigenvalues `≤ 10·d·ε·λ_max` dropped, their columns zero) from
    the label-set means `[T, d]` and sample counts `[T]`; `T'` = sets with samples. numpy in,
    numpy out (the streaming path of `networks.statistics`); jax arrays otherwise."""
    xp = array_module(means, counts)
    means = xp.asarray(means)
    counts = xp.asarray(counts, dtype=means.dtype)
    present = counts > 0
    muG = counts @ means / xp.sum(counts)            # per-sample global mean
    D = (means - muG) * present[:, None]
    Tp = xp.sum(present).astype(means.dtype)
    w, V = xp.linalg.eigh(D.T @ D / Tp)
    s = xp.abs(w)
    cutoff = 10.0 * means.shape[1] * xp.finfo(means.dtype).eps * xp.max(s)
    inv = xp.where(s > cutoff, 1.0 / xp.where(s > cutoff, s, 1.0), 0.0)
    return V * xp.sqrt(inv), Tp


def within_between_ratio(within_ss, means, counts):
    """`tr Σ_W / tr Σ_B` (inf when `Σ_B = 0`), `Σ_W`, `Σ_B` as in `nc1`: `within_ss` =
    `Σ_i ‖h_i − μ_{S(i)}‖²`, means `[T, d]`, counts `[T]`. The scale-free collapse summary
    without `nc1`'s inverse."""
    xp = array_module(means, counts)
    counts = xp.asarray(counts, dtype=means.dtype)
    present = counts > 0
    muG = counts @ means / xp.sum(counts)
    tr_b = xp.sum(((means - muG) * present[:, None]) ** 2) / xp.sum(present)
    tr_w = within_ss / xp.sum(counts)
    return xp.where(tr_b > 0, tr_w / xp.where(tr_b > 0, tr_b, 1.0), xp.inf)


def nc1(features, set_index, num_sets: int):
    """NC1 on per-sample features (Li et al. 2024; Papyan et al. 2020):

        μ_S = mean_{i: S(i)=S} h_i,   μ_G = (1/N) Σ_i h_i   (per-sample = π-weighted mean),
        Σ_W = (1/N) Σ_i (h_i − μ_{S(i)})(h_i − μ_{S(i)})ᵀ,
        Σ_B = (1/T') Σ_{S present} (μ_S − μ_G)(μ_S − μ_G)ᵀ,
        NC1 = tr(Σ_W Σ_B^†) / T'  =  Σ_i ‖(h_i − μ_{S(i)})ᵀ L‖² / (N T'),

    `Σ_B^† = L Lᵀ` (`between_set_whitener`), so no `d × d` `Σ_W` is formed. `T'` = number
    of label sets with at least one sample. `features [N, d]`, `set_index [N]` integers in
    `[0, num_sets)` (e.g. from `labels.sample_labels`), `num_sets` static.
    Zero at exact NC1 (every sample on its set's mean).
    """
    X = jnp.asarray(features)
    N = X.shape[0]
    counts = jax.ops.segment_sum(jnp.ones((N,), X.dtype), set_index, num_segments=num_sets)
    sums = jax.ops.segment_sum(X, set_index, num_segments=num_sets)
    mu = sums / jnp.where(counts > 0, counts, 1.0)[:, None]
    L, Tp = between_set_whitener(mu, counts)
    return jnp.sum(((X - mu[set_index]) @ L) ** 2) / (N * Tp)


def nc2_classifier(W):
    """NC2 of the classifier: `‖W Wᵀ/‖W Wᵀ‖_F − P/√(K−1)‖_F` (no centring; 0 for a
    simplex ETF, `W [K, d]`)."""
    W = jnp.asarray(W)
    return jnp.linalg.norm(_safe_normalize(W @ W.T) - _etf_target(W.shape[0], W.dtype))


def weighted_mean(H, weights):
    """π-weighted (per-sample) global mean `Σ_s π_s h_s / Σ_s π_s`."""
    H = jnp.asarray(H)
    weights = jnp.asarray(weights, dtype=H.dtype)
    return weights @ H / jnp.sum(weights)


def singleton_means(H, label_sets, weights):
    """`(M [K, d], present [K])`: row `k` is the prototype of `{k}` (zero if `{k}` is not in
    the support, with `present[k] = False`); `H [T, d]` rows follow `label_sets [T, K]`."""
    H = jnp.asarray(H)
    Y = jnp.asarray(label_sets, dtype=H.dtype)
    w = jnp.asarray(weights, dtype=H.dtype)
    single = (jnp.round(jnp.sum(Y, -1)) == 1) & (w > 0)
    E = (Y * single[:, None]).T                               # [K, T]
    present = jnp.sum(E, 1) > 0
    return E @ H, present


def _centre(M, center):
    if center is None:
        return M - jnp.mean(M, axis=0)
    return M - jnp.asarray(center, dtype=M.dtype)


def nc2_features(singleton_M, center=None):
    """NC2 of the singleton means: `M̃ = [h_k − μ]_k`, `‖M̃ M̃ᵀ/‖M̃ M̃ᵀ‖_F − P/√(K−1)‖_F`.

    `μ` = `center` if given (e.g. `weighted_mean(H, weights)`, the per-sample global mean),
    else the unweighted mean of the `K` singleton means. Needs every singleton in the
    support (`singleton_means` leaves absent ones as zero rows).
    """
    M = _centre(jnp.asarray(singleton_M), center)
    return jnp.linalg.norm(_safe_normalize(M @ M.T) - _etf_target(M.shape[0], M.dtype))


def nc3(W, singleton_M, center=None):
    """NC3 self-duality: `‖W/‖W‖_F − M̃/‖M̃‖_F‖_F`, `M̃ = [h_k − μ]_k`, `μ` as in
    `nc2_features` (unweighted mean of the singleton means unless `center` is given)."""
    M = _centre(jnp.asarray(singleton_M), center)
    return jnp.linalg.norm(_safe_normalize(jnp.asarray(W)) - _safe_normalize(M))


def tagwise_angles(H, label_sets, weights, center=None):
    """Tag-wise angle (Li et al. 2024) per row, in radians:
    `θ_S = ∠(h_S − μ, mean_{k∈S}(h_k − μ))` for `|S| ≥ 2` whose singletons are all in the
    support; NaN otherwise (and where either vector is zero). `μ = center` if given, else
    no centring (`μ = 0`, as in THEORY §5 where `h_S = α_m Σ_{k∈S} w_k`); pass
    `weighted_mean(H, weights)` for the per-sample global mean.
    """
    H = jnp.asarray(H)
    Y = jnp.asarray(label_sets, dtype=H.dtype)
    w = jnp.asarray(weights, dtype=H.dtype)
    M, present = singleton_means(H, Y, w)
    mu = jnp.zeros(H.shape[1], H.dtype) if center is None else jnp.asarray(center, H.dtype)
    m = jnp.round(jnp.sum(Y, -1))
    ok = (m >= 2) & (w > 0) & (Y @ present.astype(H.dtype) == m)
    A = H - mu
    B = (Y @ (M - mu)) / jnp.where(m > 0, m, 1.0)[:, None]
    na, nb = jnp.linalg.norm(A, axis=1), jnp.linalg.norm(B, axis=1)
    ok = ok & (na > 0) & (nb > 0)
    cos = jnp.sum(A * B, 1) / jnp.where(ok, na * nb, 1.0)
    return jnp.where(ok, jnp.arccos(jnp.clip(cos, -1.0, 1.0)), jnp.nan)


class NCMetrics(NamedTuple):
    """NC metrics of a reduced solution (one prototype per label set, so NC1 = 0):
    `nc2_W`, `nc2_H` (singleton means, unweighted centring), `nc3`, and the largest and
    mean tag-wise angle (radians, uncentred) over the sets where it is defined."""

    nc2_W: jax.Array
    nc2_H: jax.Array
    nc3: jax.Array
    tagwise_angle_max: jax.Array
    tagwise_angle_mean: jax.Array


def nc_metrics(W, H, label_sets, weights) -> NCMetrics:
    """All reduced-form NC metrics at once (pure jnp)."""
    M, _ = singleton_means(H, label_sets, weights)
    ang = tagwise_angles(H, label_sets, weights)
    return NCMetrics(nc2_classifier(W), nc2_features(M), nc3(W, M), jnp.nanmax(ang),
                     jnp.nanmean(ang))


def tagwise_residuals(gram_H, label_sets, weights=None):
    """Relative tag-wise averaging residuals `‖h_S − c_S v_S‖ / ‖h_S‖` (`v_S = mean_{k∈S} h_k`,
    best scalar `c_S`; `mlnc_jax.analysis.synthesis` rule (a)) from the prototype Gram `H Hᵀ` alone, so
    they are rotation-invariant and differentiable. `label_sets` must be concrete (it fixes
    which rows are singletons). Returns `(residuals [n], rows [n])` for the sets with `|S| ≥ 2`
    whose singletons are all in the support (rows with zero weight left out)."""
    Y = np.asarray(label_sets) > 0.5
    w = np.ones(Y.shape[0]) if weights is None else np.asarray(weights)
    single = {int(np.flatnonzero(Y[s])[0]): s for s in range(Y.shape[0])
              if Y[s].sum() == 1 and w[s] > 0}
    rows, idx = [], []
    for s in range(Y.shape[0]):
        S = np.flatnonzero(Y[s]).tolist()
        if w[s] > 0 and len(S) >= 2 and all(k in single for k in S):
            rows.append(s)
            idx.append([single[k] for k in S])
    if not rows:
        raise InputError("no label set with |S| >= 2 has all its singletons in the support")
    A = np.zeros((len(rows), Y.shape[0]))  # v_S = A_S · H
    for j, i in enumerate(idx):
        A[j, i] = 1.0 / len(i)
    A = jnp.asarray(A, dtype=gram_H.dtype)
    rows_a = np.asarray(rows)
    hh = gram_H[rows_a, rows_a]
    hv = jnp.sum(A * gram_H[rows_a, :], -1)
    vv = jnp.einsum("jt,tu,ju->j", A, gram_H, A)
    r2 = jnp.maximum(1.0 - hv * hv / (vv * hh), 0.0)
    pos = r2 > 0  # √ is not differentiable at an exact tag-wise average: derivative 0 there
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, r2, 1.0)), 0.0), rows_a


def simplex_etf_distance(gram_W):
    """`‖W Wᵀ/‖W Wᵀ‖ − P/‖P‖‖_F²`, `P = I − 11ᵀ/K`: 0 exactly for a simplex ETF classifier."""
    K = gram_W.shape[-1]
    P = jnp.eye(K, dtype=gram_W.dtype) - 1.0 / K
    G = gram_W / jnp.linalg.norm(gram_W)
    return jnp.sum((G - P / jnp.linalg.norm(P)) ** 2)


