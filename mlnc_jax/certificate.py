"""Global-optimality certificate and collapse thresholds (THEORY §3).

With `G = [√π_s g_s]_s`, `g_s = ∇_z ℓ(W h_s + b, y_s)`, a first-order critical point with
`‖G‖_op ≤ √(λ_W λ_H)` is a global minimiser of the UFM (when `d ≥ rank` of the convex
solution). We report `ρ = ‖G‖_op / √(λ_W λ_H)`: `ρ ≈ 1` at an optimum with `W ≠ 0`,
`ρ ≤ 1` at the collapsed optimum, `ρ > 1` at a non-global critical point.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .labels import LabelDistribution
from .ufm import UFMConfig, UFMParams, loss_gradients, padding_safe_labels

__all__ = ["gradient_matrix", "certificate", "collapse_gradients", "collapse_threshold",
           "optimal_collapse_bias"]


def gradient_matrix(params: UFMParams, label_sets, weights, config: UFMConfig):
    """`G = [√π_s g_s]_s` as a `[K, T]` matrix (THEORY §3)."""
    g = loss_gradients(params, padding_safe_labels(label_sets, weights, config), config)
    return (jnp.sqrt(weights)[:, None] * g).T


def certificate(params: UFMParams, label_sets, weights, config: UFMConfig):
    """`ρ = ‖G‖_op / √(λ_W λ_H)` (THEORY §3)."""
    G = gradient_matrix(params, label_sets, weights, config)
    return jnp.linalg.norm(G, ord=2) / jnp.sqrt(config.lambda_w * config.lambda_h)


def optimal_collapse_bias(dist: LabelDistribution, config: UFMConfig) -> np.ndarray:
    """Optimal bias `b₀` at `W = 0, H = 0` with a free bias (`λ_b = 0`), THEORY §3.

    `mse`, `bce`: `b₀` makes the fitted logits equal `p` (mse: `b₀ = p`; bce:
    `σ(b₀) = p`, so `b₀ = logit(p)`, infinite where `p_k ∈ {0, 1}`); `pal`: softmax(b₀)
    `= p/m̄`; `pal_normalized`: softmax(b₀) `= E[y/m]`.
    """
    Y = np.asarray(dist.label_sets, dtype=np.float64)
    w = np.asarray(dist.weights, dtype=np.float64)
    p = w @ Y
    m = Y.sum(1)
    with np.errstate(divide="ignore"):
        if config.loss == "mse":
            return p
        if config.loss == "bce":
            return np.log(p) - np.log1p(-p)
        if config.loss == "pal":
            return np.log(p / p.sum())
        q = w @ (Y / m[:, None])
        return np.log(q)


def collapse_gradients(dist: LabelDistribution, loss: str) -> np.ndarray:
    """`g⁰_s = ∇ℓ(b₀, y_s)` at the collapsed point with a free bias, `[T, K]` (THEORY §3).

    `mse`, `bce`: `p − y`; `pal`: `(m/m̄) p − y`; `pal_normalized`: `E[y/m] − y/m`.
    """
    Y = np.asarray(dist.label_sets, dtype=np.float64)
    w = np.asarray(dist.weights, dtype=np.float64)
    p = w @ Y
    m = Y.sum(1)
    if loss in ("mse", "bce"):
        return p[None, :] - Y
    if loss == "pal":
        return (m / p.sum())[:, None] * p[None, :] - Y
    if loss == "pal_normalized":
        Yn = Y / m[:, None]
        return (w @ Yn)[None, :] - Yn
    raise ValueError(f"unknown loss {loss!r}")


def collapse_threshold(dist: LabelDistribution, loss: str) -> float:
    """`λ_max(Σ_s π_s g⁰_s g⁰_sᵀ)` (THEORY §3, verified): with a free bias, `W = 0, H = 0`
    (and `b = b₀`) is the global minimiser iff this value `≤ λ_W λ_H`.
    """
    keep = np.asarray(dist.weights) > 0  # padding rows drop out
    dist = LabelDistribution(np.asarray(dist.label_sets)[keep], np.asarray(dist.weights)[keep],
                             dist.num_classes)
    g = collapse_gradients(dist, loss)
    w = np.asarray(dist.weights, dtype=np.float64)
    S = (g * w[:, None]).T @ g
    return float(np.linalg.eigvalsh(S)[-1])
