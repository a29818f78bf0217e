"""Multi-label losses on logits (THEORY §2). All are convex in the logits `z`.

Each loss maps `(z [K], y [K]) -> scalar`; batch with `jax.vmap`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .errors import InputError

__all__ = ["LOSSES", "pal", "pal_normalized", "bce", "mse", "get_loss", "loss_curvature_bound"]


def pal(z, y):
    """Pick-all-label cross-entropy (Li et al. 2024): `m·LSE(z) − yᵀz`, `m = 1ᵀy`.

    Invariant to `z + c·1`.
    """
    return jnp.sum(y) * jax.nn.logsumexp(z) - jnp.dot(y, z)


def pal_normalized(z, y):
    """Soft-target cross-entropy `LSE(z) − yᵀz/m`; undefined for the empty set (m = 0)."""
    return jax.nn.logsumexp(z) - jnp.dot(y, z) / jnp.sum(y)


def bce(z, y):
    """One-vs-all sigmoid loss `Σ_k softplus(z_k) − y_k z_k`."""
    return jnp.sum(jax.nn.softplus(z) - y * z)


def mse(z, y):
    """Squared error `½‖z − y‖²`."""
    return 0.5 * jnp.sum((z - y) ** 2)


LOSSES = {"pal": pal, "pal_normalized": pal_normalized, "bce": bce, "mse": mse}


def get_loss(name: str):
    try:
        return LOSSES[name]
    except KeyError:
        raise InputError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None


def loss_curvature_bound(name: str, max_multiplicity: float) -> float:
    """Upper bound on `‖∇²_z ℓ‖_op` (softmax Hessian ≤ ½, sigmoid'' ≤ ¼)."""
    return {
        "pal": 0.5 * max(max_multiplicity, 1.0),
        "pal_normalized": 0.5,
        "bce": 0.25,
        "mse": 1.0,
    }[name]
