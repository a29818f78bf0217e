"""The collapsed point `W = 0, H = 0` and when it is the global minimiser (THEORY §3).

With a free bias the collapsed point sits at the loss's optimal constant bias `b₀`; its
per-set gradients `g⁰_s = ∇ℓ(b₀, y_s)` decide: collapse is optimal iff
`λ_max(Σ_s π_s g⁰_s g⁰_sᵀ) ≤ λ_W λ_H`.
"""

from __future__ import annotations

import numpy as np

from ..model.labels import LabelDistribution
from ..model.losses import get_loss
from ..model.ufm import UFMConfig

__all__ = ["collapse_gradients", "collapse_threshold", "optimal_collapse_bias"]


def _support(dist: LabelDistribution):
    keep = np.asarray(dist.weights) > 0  # padding rows drop out
    return (np.asarray(dist.label_sets, dtype=np.float64)[keep],
            np.asarray(dist.weights, dtype=np.float64)[keep])


def optimal_collapse_bias(dist: LabelDistribution, config: UFMConfig) -> np.ndarray:
    """Optimal bias `b₀` at `W = 0, H = 0` with a free bias (THEORY §3), from the loss record."""
    return np.asarray(config.loss_record.collapse_bias(*_support(dist)))


def collapse_gradients(dist: LabelDistribution, loss) -> np.ndarray:
    """`g⁰_s = ∇ℓ(b₀, y_s)` at the collapsed point with a free bias, `[T, K]` (THEORY §3)."""
    Y, w = _support(dist)
    return np.asarray(get_loss(loss).collapse_gradients(Y, w))


def collapse_threshold(dist: LabelDistribution, loss) -> float:
    """`λ_max(Σ_s π_s g⁰_s g⁰_sᵀ)` (THEORY §3, verified): with a free bias, `W = 0, H = 0`
    (and `b = b₀`) is the global minimiser iff this value `≤ λ_W λ_H`.
    """
    Y, w = _support(dist)
    g = np.asarray(get_loss(loss).collapse_gradients(Y, w))
    S = (g * w[:, None]).T @ g
    return float(np.linalg.eigvalsh(S)[-1])


