"""Multi-label losses on logits (THEORY §2), each a `Loss` record.

A `Loss` carries everything the package needs of a loss, so no other module branches on a
loss name:

* `derivatives(Z, Y) -> (l [T], g [T, K], curv)`: value, gradient and curvature
  `∇²ℓ(z_s)` of every row, the curvature in the structured form the Newton core uses;
  `hess_matvec(curv, V)` applies it to `[T, K]` and `hess_congruence(curv, R)` forms
  `R ∇²ℓ_s Rᵀ` (`[T, r, r]`), both for the exact prototype elimination; `hess_diagonal(curv,
  P)` gives `diag(Pᵀ∇²ℓ_s P)` (`[T, d]`; `P` None: `diag ∇²ℓ_s`), the Jacobi preconditioner
  of the matrix-free path. Built-ins use `diag(a_s) − q_s q_sᵀ` (rank one at most);
  `Loss.from_function` uses the dense `[T, K, K]` Hessian from autodiff.
* `convex`: the certificate of THEORY §3 applies only to convex losses (§2c).
* `label_homogeneous`: `ℓ(z, c y) = c ℓ(z, y)` for `c ≥ 0` (PAL), so per-set loss weights
  can be folded into the labels (`optimum(..., loss_weights=...)`).
* `ignored_directions(K)`: logit directions the loss ignores (PAL: `1`), `[n, K]`.
* `collapse_bias(Y, w)` and `collapse_gradients(Y, w)`: the optimal bias `b₀` at
  `W = 0, H = 0` and `g⁰_s = ∇ℓ(b₀, y_s)` (free bias, THEORY §3).
* `minimiser_error(Y, w)` (THEORY §2b, free bias) and `domain_error(Y, w)` (label sets
  where the loss is undefined): a one-line message, or None.
* `refine_step`: the solver refines a trial point's prototypes (`engine.newton`) by
  a Newton step per set changing no logit by more than this (`inf`: `ℓ` is quadratic, the
  step is exact; `0`: no refinement). It pays where the curvature stays `O(1)` in some logit
  directions at the optimum (PAL's in-set contrasts: 1; all of MSE's: `inf`). BCE's
  curvature `σ(1−σ)` vanishes with the margins in every direction: there it costs steps
  and buys nothing (0).
* `change(Z, dZ, Y)`: `ℓ(z + dz) − ℓ(z)` per row without cancellation (`value_change`;
  built-ins in closed form, others as a plain difference): the solver's step test near an
  optimum, where the changes of `F` sink below the round-off of `F` itself (THEORY §2c).

A record is callable: `loss(z, y)` is `ℓ(z, y)` for one label set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .errors import InputError

__all__ = ["Loss", "LOSSES", "LOSS_ALIASES", "register_loss", "pal", "pal_normalized", "bce", "mse", "get_loss", "loss_name"]


@dataclass(frozen=True, eq=False)
class Loss:
    """A multi-label loss and what the solver, certificate and theory need of it.

    Immutable and hashable by identity (a jit static argument; `jax.jit(mj.pal)` works
    too). Build your own with `Loss.from_function`.
    """

    name: str
    derivatives: Callable
    hess_matvec: Callable
    hess_congruence: Callable
    hess_diagonal: Callable
    convex: bool
    ignored_directions: Callable
    collapse_bias: Callable
    collapse_gradients: Callable
    minimiser_error: Callable
    domain_error: Callable
    label_homogeneous: bool = False
    value_change: Callable | None = None
    refine_step: float = 1.0

    def __call__(self, z, y):
        """`ℓ(z, y)` for one label set (`z`, `y` of shape `[K]`)."""
        return self.derivatives(z[None], y[None])[0][0]

    def change(self, Z, dZ, Y):
        """`ℓ(z_s + dz_s) − ℓ(z_s)` for every row, to the round-off of `dz` rather than of `ℓ`
        where the record has a `value_change`."""
        if self.value_change is not None:
            return self.value_change(Z, dZ, Y)
        return self.derivatives(Z + dZ, Y)[0] - self.derivatives(Z, Y)[0]

    @staticmethod
    def from_function(name: str, fn: Callable, *, convex: bool = True,
                      ignored_directions: Callable | None = None,
                      minimiser_error: Callable | None = None,
                      domain_error: Callable | None = None,
                      label_homogeneous: bool = False) -> Loss:
        """A loss from `fn(z [K], y [K]) -> scalar`; derivatives by autodiff.

        `convex=False` makes every solution "converged_uncertified" (THEORY §2c).
        `minimiser_error(Y, w)` may state the §2b existence rule for a free bias (a message
        or None); without it existence is not checked before solving. The collapse bias
        `b₀` is found by Newton's method on `Σ_s π_s ℓ(b, y_s)`. `label_homogeneous=True`
        declares `ℓ(z, c y) = c ℓ(z, y)` (it is not checked). `register_loss` makes the record
        known by name (CLI, reports, plots).
        """
        if not callable(fn):
            raise InputError(f"Loss.from_function needs a callable, got {fn!r}")
        vg = jax.vmap(jax.value_and_grad(fn))
        hess = jax.vmap(jax.hessian(fn))

        def derivatives(Z, Y):
            l, g = vg(Z, Y)
            return l, g, hess(Z, Y)

        bias = _numeric_collapse_bias(derivatives)

        def collapse_gradients(Y, w):
            b0 = bias(Y, w)
            with jax.enable_x64(True):
                Z = jnp.broadcast_to(jnp.asarray(b0), np.shape(Y))
                return np.asarray(derivatives(Z, jnp.asarray(Y, Z.dtype))[1])

        return Loss(str(name), derivatives, _dense_matvec, _dense_congruence, _dense_diagonal,
                    bool(convex),
                    ignored_directions or _no_directions, bias, collapse_gradients,
                    minimiser_error or _always, domain_error or _always, bool(label_homogeneous))

    def __repr__(self) -> str:
        return f"Loss({self.name!r})"


# -- curvature structures -------------------------------------------------------------------


def _diag_rank1_matvec(curv, V):
    """`(diag(a_s) − q_s q_sᵀ) v_s` for every row; `q` None means purely diagonal."""
    a, q = curv
    out = a * V
    return out if q is None else out - q * jnp.sum(q * V, -1, keepdims=True)


def _diag_rank1_congruence(curv, R):
    """`R (diag(a_s) − q_s q_sᵀ) Rᵀ`, `[T, r, r]`."""
    a, q = curv
    r = R.shape[0]
    RR = (R[:, None, :] * R[None, :, :]).reshape(r * r, -1)
    E = (a @ RR.T).reshape(-1, r, r)
    if q is not None:
        Rq = q @ R.T
        E = E - Rq[:, :, None] * Rq[:, None, :]
    return E


def _diag_rank1_diagonal(curv, P=None):
    """`diag(Pᵀ(diag(a_s) − q_s q_sᵀ)P)` for every row, `[T, d]` (`P` None: the identity)."""
    a, q = curv
    if P is None:
        return a if q is None else a - q * q
    out = a @ (P * P)
    return out if q is None else out - (q @ P) ** 2


def _dense_matvec(A, V):
    return jnp.einsum("tkl,tl->tk", A, V)


def _dense_congruence(A, R):
    return jnp.einsum("ik,tkl,jl->tij", R, A, R)


def _dense_diagonal(A, P=None):
    if P is None:
        return jnp.diagonal(A, axis1=-2, axis2=-1)
    return jnp.einsum("kj,tkl,lj->tj", P, A, P)


# -- the built-in losses --------------------------------------------------------------------


def _softmax_parts(Z):
    lse = jax.nn.logsumexp(Z, axis=-1)
    return lse, jnp.exp(Z - lse[:, None])


_STABLE_SPREAD = 30.0  # beyond this logit spread past the in-set mean nothing cancels


def _pal_value_gradient(Z, Y):
    """`(ℓ, g)` of PAL without cancellation where the labels' logits dominate (vanishing
    regularization, THEORY §2c): relative to the in-set mean logit `c`, with
    `a_j = expm1(z_j − c)` on the set `I` (second order in the spread: `Σ_I (z_j − c) = 0`)
    and `R = Σ_{j∉I} e^{z_j − c}`, `Z' = |I| + Σ_I a_j + R`:
    `g_k = [y_k(|I| a_k − Σ_I a_j − R) + (m − y_k|I|)(1 + a_k)] / Z'` on `I`,
    `g_j = m e^{z_j − c} / Z'` off it, `ℓ = m log Z' + m c − yᵀz`. The textbook
    `m p_k − y_k` loses every digit below `ε / (1 − p_k)`. Rows whose spread exceeds
    `_STABLE_SPREAD` (or with `m = 0`) keep the textbook form, exact there."""
    lse, p = _softmax_parts(Z)
    m = jnp.sum(Y, -1)
    inset = Y > 0
    n = jnp.sum(inset, -1)
    c = jnp.sum(jnp.where(inset, Z, 0.0), -1) / jnp.maximum(n, 1)
    spread = jnp.max(Z, -1) - c
    ok = (n > 0) & (spread <= _STABLE_SPREAD)
    dz = jnp.minimum(Z - c[:, None], _STABLE_SPREAD)
    a = jnp.where(inset, jnp.expm1(dz), 0.0)
    A = jnp.sum(a, -1)
    R = jnp.sum(jnp.where(inset, 0.0, jnp.exp(dz)), -1)
    Zp = n + A + R
    num_in = Y * (n[:, None] * a - (A + R)[:, None]) + (m[:, None] - Y * n[:, None]) * (1.0 + a)
    g_stable = jnp.where(inset, num_in, m[:, None] * jnp.exp(dz)) / Zp[:, None]
    nn = jnp.maximum(n, 1)
    logZ = jnp.log(nn) + jnp.log1p((A + R) / nn)
    l_stable = m * logZ + (m * c - jnp.sum(Y * Z, -1))
    l = jnp.where(ok, l_stable, m * lse - jnp.sum(Y * Z, -1))
    g = jnp.where(ok[:, None], g_stable, m[:, None] * p - Y)
    return l, g, m, p


def _pal_derivatives(Z, Y):
    """`ℓ = m·LSE(z) − yᵀz`, `g = m p − y`, `∇²ℓ = m(diag p − p pᵀ)` (`p` = softmax)."""
    l, g, m, p = _pal_value_gradient(Z, Y)
    return l, g, (m[:, None] * p, jnp.sqrt(m)[:, None] * p)


def _pal_normalized_derivatives(Z, Y):
    """`ℓ = LSE(z) − yᵀz/m`, `g = p − y/m`, `∇²ℓ = diag p − p pᵀ`: PAL's, divided by `m`."""
    l, g, m, p = _pal_value_gradient(Z, Y)
    return l / m, g / m[:, None], (p, p)


def _pal_change(Z, dZ, Y):
    """`m log(Σ_j p_j e^{dz_j} / Σ_j p_j) − yᵀdz` with `e^{dz} − 1` by `expm1`."""
    _, p = _softmax_parts(Z)
    m = jnp.sum(Y, -1)
    rel = jnp.sum(p * jnp.expm1(dZ), -1) / jnp.sum(p, -1)
    return m * jnp.log1p(rel) - jnp.sum(Y * dZ, -1)


def _pal_normalized_change(Z, dZ, Y):
    return _pal_change(Z, dZ, Y) / jnp.sum(Y, -1)


def _bce_change(Z, dZ, Y):
    """`softplus(z + dz) − softplus(z) = log1p(σ(z) expm1(dz))`, on the side of each label
    where it does not cancel (as `_bce_derivatives`)."""
    up = jnp.log1p(jax.nn.sigmoid(Z) * jnp.expm1(dZ))
    down = jnp.log1p(jax.nn.sigmoid(-Z) * jnp.expm1(-dZ))
    return jnp.sum(jnp.where(Y > 0, down, up), -1)


def _mse_change(Z, dZ, Y):
    return jnp.sum(dZ * (Z - Y + 0.5 * dZ), -1)


def _bce_derivatives(Z, Y):
    """`ℓ = Σ_k softplus(z_k) − y_k z_k`, `g = σ(z) − y`, `∇²ℓ = diag σ(1−σ)`, written as
    `(1−y) softplus(z) + y softplus(−z)` and `(1−y)σ(z) − yσ(−z)` (the same functions):
    no cancellation where a label's logit is large (vanishing regularization)."""
    s, sm = jax.nn.sigmoid(Z), jax.nn.sigmoid(-Z)
    l = jnp.sum((1.0 - Y) * jax.nn.softplus(Z) + Y * jax.nn.softplus(-Z), -1)
    return l, (1.0 - Y) * s - Y * sm, (s * sm, None)


def _mse_derivatives(Z, Y):
    """`ℓ = ½‖z − y‖²`, `g = z − y`, `∇²ℓ = I`."""
    return 0.5 * jnp.sum((Z - Y) ** 2, -1), Z - Y, (jnp.ones_like(Z), None)


def _no_directions(K):
    return np.zeros((0, K))


def _ones_direction(K):
    return np.ones((1, K)) / np.sqrt(K)


def _always(Y, w):
    return None


def _frequencies(Y, w):
    Y = np.asarray(Y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    keep = w > 0
    return Y[keep], w[keep], w[keep] @ Y[keep]


def _unused_class_error(Y, w):
    """THEORY §2b, pal and pal_normalized: a minimiser exists iff every `p_k > 0` (or only
    the empty set has mass)."""
    Y, w, p = _frequencies(Y, w)
    if p.sum() == 0:
        return None
    bad = np.flatnonzero(p <= 0)
    if bad.size:
        return (f"no minimiser exists: class {bad[0]} has frequency p = 0, so its bias runs to "
                f"-inf (THEORY §2b); use lambda_b > 0 or no bias, or drop the class")
    return None


def _bce_minimiser_error(Y, w):
    """THEORY §2b, bce: a minimiser exists iff `0 < p_k < 1` for every class."""
    Y, w, p = _frequencies(Y, w)
    for k in range(p.size):
        if p[k] <= 0 or p[k] >= 1 - 1e-15:
            side = "+inf" if p[k] > 0 else "-inf"
            return (f"no minimiser exists: class {k} has frequency p = {p[k]:g}, so its bias "
                    f"runs to {side} (THEORY §2b); use lambda_b > 0 or no bias")
    return None


def _empty_set_error(Y, w):
    Y, w, _ = _frequencies(Y, w)
    if np.any(Y.sum(-1) == 0):
        return "pal_normalized is undefined for the empty label set (m = 0)"
    return None


def _pal_bias(Y, w):
    """softmax(b₀) = p/m̄ (THEORY §3)."""
    _, _, p = _frequencies(Y, w)
    with np.errstate(divide="ignore"):
        return np.log(p / p.sum())


def _pal_normalized_bias(Y, w):
    """softmax(b₀) = E[y/m] (THEORY §3)."""
    Y, w, _ = _frequencies(Y, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(w @ (Y / Y.sum(-1, keepdims=True)))


def _bce_bias(Y, w):
    """σ(b₀) = p: `b₀ = logit(p)`, infinite where `p_k ∈ {0, 1}` (THEORY §3)."""
    _, _, p = _frequencies(Y, w)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


def _mse_bias(Y, w):
    return _frequencies(Y, w)[2]


def _pal_collapse_gradients(Y, w):
    """`g⁰ = (m/m̄) p − y` (THEORY §3)."""
    Y = np.asarray(Y, dtype=np.float64)
    _, _, p = _frequencies(Y, w)
    return (Y.sum(-1) / p.sum())[:, None] * p[None, :] - Y


def _pal_normalized_collapse_gradients(Y, w):
    """`g⁰ = E[y/m] − y/m` (THEORY §3)."""
    Y = np.asarray(Y, dtype=np.float64)
    Yk, wk, _ = _frequencies(Y, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        Yn = Y / Y.sum(-1, keepdims=True)
        return (wk @ (Yk / Yk.sum(-1, keepdims=True)))[None, :] - Yn


def _centred_collapse_gradients(Y, w):
    """`g⁰ = p − y` for mse and bce (THEORY §3)."""
    Y = np.asarray(Y, dtype=np.float64)
    return _frequencies(Y, w)[2][None, :] - Y


def _numeric_collapse_bias(derivatives, iters: int = 50):
    """`b₀ = argmin_b Σ_s π_s ℓ(b, y_s)` by Newton's method (for user-defined losses);
    least squares handles the directions the loss ignores."""

    @jax.jit
    def grad_hess(b, Y, w):
        _, g, A = derivatives(jnp.broadcast_to(b, Y.shape), Y)
        return w @ g, jnp.einsum("t,tkl->kl", w, A)

    def collapse_bias(Y, w):
        Y, w, _ = _frequencies(Y, w)
        b = np.zeros(Y.shape[1])
        with jax.enable_x64(True):
            Yj, wj = jnp.asarray(Y), jnp.asarray(w)
            for _ in range(iters):
                gb, Hb = (np.asarray(x) for x in grad_hess(jnp.asarray(b), Yj, wj))
                step = np.linalg.lstsq(Hb, gb, rcond=1e-12)[0]
                b = b - step
                if np.linalg.norm(gb) <= 1e-14 * max(1.0, np.abs(gb).sum()) or \
                        np.linalg.norm(step) <= 1e-14 * (1 + np.linalg.norm(b)):
                    break
        return b

    return collapse_bias


def _builtin(name, derivatives, change, ignored, bias, collapse_gradients, minimiser,
             domain=_always, homogeneous=False, refine=1.0):
    return Loss(name, derivatives, _diag_rank1_matvec, _diag_rank1_congruence,
                _diag_rank1_diagonal, True, ignored,
                bias, collapse_gradients, minimiser, domain, homogeneous, change, refine)


pal = _builtin("pal", _pal_derivatives, _pal_change, _ones_direction, _pal_bias,
               _pal_collapse_gradients, _unused_class_error, homogeneous=True)
"""Pick-all-label cross-entropy (Li et al. 2024): `m·LSE(z) − yᵀz`; invariant to `z + c1`."""

pal_normalized = _builtin("pal_normalized", _pal_normalized_derivatives,
                          _pal_normalized_change, _ones_direction, _pal_normalized_bias,
                          _pal_normalized_collapse_gradients, _unused_class_error,
                          _empty_set_error)
"""Soft-target cross-entropy `LSE(z) − yᵀz/m`; undefined for the empty set (m = 0)."""

bce = _builtin("bce", _bce_derivatives, _bce_change, _no_directions, _bce_bias,
               _centred_collapse_gradients, _bce_minimiser_error, refine=0.0)
"""One-vs-all sigmoid loss `Σ_k softplus(z_k) − y_k z_k`."""

mse = _builtin("mse", _mse_derivatives, _mse_change, _no_directions, _mse_bias,
               _centred_collapse_gradients, _always, refine=float("inf"))
"""Squared error `½‖z − y‖²`."""

LOSSES = {l.name: l for l in (pal, pal_normalized, bce, mse)}
"""The losses known by name, in the order tables and figures list them; `register_loss` adds."""


LOSS_ALIASES = {"ce": "pal"}
"""Other names of a loss. `ce`: softmax cross-entropy, which is PAL on singleton label sets
(`m = 1`: `LSE(z) − z_k`), the multi-class loss of the literature (`mj.multiclass`)."""


def register_loss(loss: Loss) -> Loss:
    """Make `loss` known by its name: `get_loss`, the CLI's `--loss`, reports and plot colours
    then include it. Refuses a name already taken by another record."""
    if not isinstance(loss, Loss):
        raise InputError(f"register_loss needs a Loss record, got {type(loss).__name__}")
    if LOSSES.get(loss.name, loss) is not loss or loss.name in LOSS_ALIASES:
        raise InputError(f"a loss named {loss.name!r} is already registered")
    LOSSES[loss.name] = loss
    return loss


def get_loss(loss: Any) -> Loss:
    """The `Loss` record for a name of `LOSSES` or a `Loss` itself."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and LOSS_ALIASES.get(loss, loss) in LOSSES:
        return LOSSES[LOSS_ALIASES.get(loss, loss)]
    raise InputError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)} "
                     "or build one with Loss.from_function")


def loss_name(loss: Any) -> str:
    """The name of a loss given as a name or a record (for files and tables)."""
    return get_loss(loss).name
