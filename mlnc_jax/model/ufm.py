"""The unconstrained features model (THEORY §2).

Reduced form (one prototype per label set, exact at every local minimiser):

    F(W, H, b) = Σ_s π_s ℓ(W h_s + b, y_s) + λ_W/2 ‖W‖² + λ_H/2 Σ_s π_s ‖h_s‖² + λ_b/2 ‖b‖²

The per-sample form with `N` samples is the same function with `π_i = 1/N` on repeated
rows: `(1/N) Σ_i ℓ(W h_i + b, y_i) + λ_W/2 ‖W‖² + λ_H/(2N) ‖H‖² + λ_b/2 ‖b‖²`.
Papers that write `λ_H/2 ‖H‖²` without the `1/N` (Zhu et al. 2021) use
`λ_H(theirs) = λ_H(here)/N`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .checks import check_int, check_lambdas
from .losses import Loss, get_loss, loss_name

__all__ = ["UFMConfig", "UFMParams", "objective", "per_sample_objective", "logits",
           "loss_terms", "loss_gradients", "padding_safe_labels", "init_params", "ClosedForm"]


class UFMConfig(NamedTuple):
    """Static options of a UFM problem (hashable, usable as a jit static argument).

    `loss` is a name of `LOSSES` or a `Loss` record (`Loss.from_function` for your own).
    `bias=False` fixes `b = 0`; with `bias=True` and `lambda_b = 0` the bias is free.
    """

    loss: Any
    dim: int
    lambda_w: float
    lambda_h: float
    lambda_b: float = 0.0
    bias: bool = True

    def validate(self) -> UFMConfig:
        get_loss(self.loss)
        dim = check_int(self.dim, "dim", low=1)
        lw, lh, lb = check_lambdas(self.lambda_w, self.lambda_h, self.lambda_b)
        return self._replace(dim=dim, lambda_w=lw, lambda_h=lh, lambda_b=lb, bias=bool(self.bias))

    @property
    def loss_record(self) -> Loss:
        """The `Loss` record of `loss`."""
        return get_loss(self.loss)

    @property
    def free_bias(self) -> bool:
        """A bias without weight decay: THEORY §2b decides whether a minimiser exists."""
        return bool(self.bias) and self.lambda_b == 0

    def as_dict(self) -> dict:
        """JSON-ready: the loss by name."""
        return {**self._asdict(), "loss": loss_name(self.loss)}

    @property
    def tau(self) -> float:
        """`τ = √(λ_W λ_H)`, the nuclear-norm weight of the convex reformulation (§3)."""
        return math.sqrt(self.lambda_w * self.lambda_h)


class UFMParams(NamedTuple):
    """UFM variables: `W [K, d]`, `H [T, d]` (rows = label sets), `b [K]`."""

    W: jax.Array
    H: jax.Array
    b: jax.Array


def logits(params: UFMParams, config: UFMConfig):
    """`z_s = W h_s + b` for every row, `[T, K]`."""
    z = params.H @ params.W.T
    return z + params.b if config.bias else z


def padding_safe_labels(label_sets, weights):
    """Label sets with zero-weight padding rows made harmless: padding rows (empty sets,
    where e.g. `pal_normalized` divides by `m = 0`) get all labels. Their weight is 0, so
    they never count."""
    return jnp.where((jnp.asarray(weights) > 0)[:, None], label_sets, 1.0)


def loss_terms(params: UFMParams, label_sets, weights, config: UFMConfig):
    """`(ℓ_s, g_s = ∇_z ℓ(W h_s + b, y_s))` for every row, padding rows zeroed."""
    z = logits(params, config)
    l, g, _ = config.loss_record.derivatives(z, padding_safe_labels(label_sets, weights))
    keep = jnp.asarray(weights) > 0
    return jnp.where(keep, l, 0.0), jnp.where(keep[:, None], g, 0.0)


def objective(params: UFMParams, label_sets, weights, config: UFMConfig):
    """Reduced UFM objective `F(W, H, b)` of THEORY §2 (padding rows with π = 0 drop out)."""
    l, _ = loss_terms(params, label_sets, weights, config)
    data = jnp.sum(weights * l)
    reg = 0.5 * config.lambda_w * jnp.sum(params.W**2)
    reg += 0.5 * config.lambda_h * jnp.sum(weights * jnp.sum(params.H**2, axis=-1))
    if config.bias:
        reg += 0.5 * config.lambda_b * jnp.sum(params.b**2)
    return data + reg


def per_sample_objective(params: UFMParams, labels, config: UFMConfig):
    """Per-sample UFM objective: `H [N, d]` one feature per sample, `labels [N, K]`."""
    n = labels.shape[0]
    return objective(params, labels, jnp.full((n,), 1.0 / n, dtype=params.W.dtype), config)


def loss_gradients(params: UFMParams, label_sets, weights, config: UFMConfig):
    """`g_s = ∇_z ℓ(W h_s + b, y_s)`, `[T, K]` (used by the certificate of §3)."""
    return loss_terms(params, label_sets, weights, config)[1]


def init_params(key, num_classes: int, num_sets: int, config: UFMConfig, scale: float = 0.1,
                dtype=None) -> UFMParams:
    """Gaussian init with entries of standard deviation `scale/√d`; `b = 0`."""
    dtype = dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    kw, kh = jax.random.split(key)
    s = scale / math.sqrt(config.dim)
    W = s * jax.random.normal(kw, (num_classes, config.dim), dtype)
    H = s * jax.random.normal(kh, (num_sets, config.dim), dtype)
    return UFMParams(W, H, jnp.zeros((num_classes,), dtype))


class ClosedForm(NamedTuple):
    """Closed-form solution: rotation-invariant quantities plus one factor realisation.

    `gram_H` is the unweighted prototype Gram `H Hᵀ` (`[T, T]`, rows in the
    distribution's order); `logits` are `z_s = W h_s + b` (`[T, K]`); `rank` is the
    number of active directions; `params` realises `(W [K, d], H [T, d], b)`.
    `eigenvalues`/`eigenvectors` are those of `Σ` (ascending).
    """

    gram_W: np.ndarray
    gram_H: np.ndarray
    logits: np.ndarray
    b: np.ndarray
    objective: float
    rank: int
    params: UFMParams
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
