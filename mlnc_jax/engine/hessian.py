"""The reduced problem's Hessian, written once (THEORY §2, §8, §8b): its product, its
diagonal in the rotated frame, the exact elimination of the prototype blocks with the
`(W, b)` Schur complement, and the symmetry null space as an operator.

Variables `x = (W [K, d], U [T, d], b [K])`, `U_s = √π_s h_s`. At a point the loss supplies
`G = [√π_s g_s]` and its curvature `∇²ℓ(z_s)` in the record's structured form (`Point`);
`newton.State` has the same fields, so a state is a point. Every consumer calls this module:
both Newton paths (`newton.exact_direction`, `matrix_free.matrix_free_direction`, damped
with `μ > 0`) and the derivatives of the optimum (`implicit`, `μ = 0` plus a shift on the
null space).

Null space (§8b): `∇²F` is singular along the rotations `(W A, U A, 0)`, `A` skew (and along
the bias directions the loss ignores). Projecting onto the rotation tangent needs one
`d × d` Lyapunov solve `M A + A M = R` through an eigendecomposition of `M` (`M = WᵀW + UᵀU`,
or `WᵀW` on the Schur complement): `O(d³ + (K + T) d²)`, no basis of size `d(d−1)/2`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..model.losses import Loss

__all__ = ["Point", "logits_change", "row_sum", "classifier_rows", "product", "diagonal", "RotatedSystem",
           "rotated_system", "Elimination", "eliminate", "orbit_coefficients",
           "orbit_projection", "ignored_bias_basis", "null_projector"]


class Point(NamedTuple):
    """What the Hessian needs of a point: the variables, `G` and the loss curvature."""
    W: jax.Array
    U: jax.Array
    b: jax.Array
    G: jax.Array
    curv: Any


def logits_change(U, dW, db, sw, bias: bool):
    """`U dWᵀ + √π dbᵀ`: the change of the (√π-scaled) logits under `(dW, ·, db)`."""
    y = U @ dW.T
    return y + sw[:, None] * db[None, :] if bias else y


def row_sum(w, X):
    """`Σ_s w_s X_s` (`w [T]`, `X [T, K]`) written as a product and a sum, not `w @ X`: in a
    jitted, vmapped Schur product (the tangent solves of `jax.jacfwd`) XLA's CPU backend at
    its default optimisation level returned wrong values past the first lane for the
    vector–matrix `dot` (jaxlib 0.10.2; `tests/test_implicit.py` checks the lanes)."""
    return jnp.sum(w[:, None] * X, axis=0)


def classifier_rows(dG, dU, dW, db, U, G, sw, lam, mu, bias: bool):
    """The `(W, b)` rows of `(∇²F + μI) v` given `dG = ∇²ℓ·(logit change)` (THEORY §2):
    `dGᵀU + GᵀdU + (λ_W + μ) dW` and `√πᵀdG + (λ_b + μ) db` (zeros without a bias)."""
    HW = dG.T @ U + G.T @ dU + (lam[0] + mu) * dW
    Hb = (row_sum(sw, dG) + (lam[2] + mu) * db) if bias else jnp.zeros_like(db)
    return HW, Hb


def product(W, U, G, curv, sw, lam, mu, loss: Loss, bias: bool) -> Callable:
    """`v ↦ (∇²F + μI) v` in `(W, U, b)`: three `[T, 2K] × [2K, d]`-sized matmuls."""

    def apply(v):
        dW, dU, db = v
        dG = loss.hess_matvec(curv, dU @ W.T + logits_change(U, dW, db, sw, bias))
        HW, Hb = classifier_rows(dG, dU, dW, db, U, G, sw, lam, mu, bias)
        return HW, dG @ W + G @ dW + (lam[1] + mu) * dU, Hb

    return apply


def diagonal(W, U, curv, w, lam, mu, loss: Loss, bias: bool):
    """The Hessian's diagonal in the current frame, `(D_W [K, d], D_U [T, d], D_b [K])`."""
    lw, lh, lb = lam[0], lam[1], lam[2]
    diag_a = loss.hess_diagonal(curv, None)            # [T, K]: diag ∇²ℓ_s
    DW = diag_a.T @ (U * U) + lw + mu                   # Σ_s a_sk ũ_sj²
    DU = loss.hess_diagonal(curv, W) + lh + mu          # diag(W̃ᵀ∇²ℓ_s W̃)
    Db = (row_sum(w, diag_a) + lb + mu) if bias else jnp.ones_like(W[:, 0])
    return DW, DU, Db


class RotatedSystem(NamedTuple):
    """The damped system of one point in the rotated frame (`matrix_free` module doc)."""
    Q: jax.Array      # [d, d] the frame: columns of W and U are rotated by it
    hvp: Any          # v ↦ (∇²F + μI) v on (W̃, Ũ, b) tuples
    diag: tuple       # the preconditioner: the Hessian's diagonal (D_W, D_U, D_b)
    g: tuple          # the gradient in the frame (as given)


def rotated_system(pt, prob, loss: Loss, bias: bool, mu, grad=None) -> RotatedSystem:
    """Rotate point `pt` into the eigenbasis of `λ_W WᵀW + λ_H UᵀU`, where the prototype and
    classifier blocks are close to diagonal, and build the product and diagonal there.
    `grad`: the gradient `(gW, gU, gb)` to rotate along (default: `pt`'s, a `newton.State`)."""
    lam, w = prob.lam, prob.w
    _, Q = jnp.linalg.eigh(lam[0] * (pt.W.T @ pt.W) + lam[1] * (pt.U.T @ pt.U))
    W, U = pt.W @ Q, pt.U @ Q
    gW, gU, gb = (pt.gW, pt.gU, pt.gb) if grad is None else grad
    g = (gW @ Q, gU @ Q, gb if bias else jnp.zeros_like(gb))
    hvp = product(W, U, pt.G, pt.curv, jnp.sqrt(w), lam, mu, loss, bias)
    return RotatedSystem(Q, hvp, diagonal(W, U, pt.curv, w, lam, mu, loss, bias), g)


# -- exact elimination of the prototype blocks -------------------------------------------------

_SCALAR_CHOL_MAX = 12  # unroll the per-row Cholesky up to this rank, else use LAPACK


def _chol(E):
    """Cholesky factor of every `E_s`, `E [T, r, r]` SPD, for `_chol_solve`."""
    r = E.shape[-1]
    if r > _SCALAR_CHOL_MAX:
        return jnp.linalg.cholesky(E)
    Et = jnp.moveaxis(E, 0, -1)  # [r, r, T]: each entry a contiguous T-vector
    L = [[None] * r for _ in range(r)]
    for j in range(r):
        s = Et[j, j]
        for k in range(j):
            s = s - L[j][k] * L[j][k]
        L[j][j] = jnp.sqrt(s)
        inv = 1.0 / L[j][j]
        for i in range(j + 1, r):
            s = Et[i, j]
            for k in range(j):
                s = s - L[i][k] * L[j][k]
            L[i][j] = s * inv
    zero = jnp.zeros_like(Et[0, 0])
    return jnp.stack([jnp.stack([L[i][j] if j <= i else zero for j in range(r)]) for i in range(r)])


def _chol_solve(L, y):
    """Solve `E_s x_s = y_s` for every row, `y [T, r]`, with `L = _chol(E)`."""
    r = y.shape[-1]
    if r > _SCALAR_CHOL_MAX:
        z = jax.lax.linalg.triangular_solve(L, y[..., None], left_side=True, lower=True)
        return jax.lax.linalg.triangular_solve(L, z, left_side=True, lower=True,
                                               transpose_a=True)[..., 0]
    yt = [y[:, i] for i in range(r)]
    z = [None] * r
    for i in range(r):
        s = yt[i]
        for k in range(i):
            s = s - L[i, k] * z[k]
        z[i] = s / L[i, i]
    x = [None] * r
    for i in reversed(range(r)):
        s = z[i]
        for k in range(i + 1, r):
            s = s - L[k, i] * x[k]
        x[i] = s / L[i, i]
    return jnp.stack(x, -1)


class Elimination(NamedTuple):
    Dinv: Callable   # y ↦ D_μ⁻¹ y, the exact inverse of the damped prototype blocks
    Bop: Callable    # t ↦ (W, b) block of the Hessian applied to (0, t, 0)
    schur: Callable  # (dW, db) ↦ (S_μ v in W, in b, u = −D_μ⁻¹ Bᵀ v)


def eliminate(pt, prob, loss: Loss, bias: bool, mu) -> Elimination:
    """Eliminate the prototype blocks `D_s = (λ_H + μ) I + Wᵀ∇²ℓ_s W` exactly: a QR of `Wᵀ`
    reduces each to an `r × r` Cholesky, `r = min(d, K)`; the Schur complement acts on `(W, b)`."""
    W, U, G, curv = pt.W, pt.U, pt.G, pt.curv
    sw = jnp.sqrt(prob.w)
    A = lambda v: loss.hess_matvec(curv, v)
    # Wᵀ = V R (QR); D_s⁻¹ = (I − VVᵀ)/c + V E_s⁻¹ Vᵀ with E_s = c I + R A_s Rᵀ (r × r)
    V, R = jnp.linalg.qr(W.T)
    c = prob.lam[1] + mu
    E = loss.hess_congruence(curv, R) + c * jnp.eye(R.shape[0], dtype=W.dtype)
    L = _chol(E)

    def Dinv(y):
        yV = y @ V
        if V.shape[1] == V.shape[0]:  # r = d: no complement (I − VVᵀ is round-off over c)
            return _chol_solve(L, yV) @ V.T
        return y / c + (_chol_solve(L, yV) - yV / c) @ V.T

    zW, zb = jnp.zeros_like(W), jnp.zeros_like(pt.b)

    def Bop(t):
        return classifier_rows(A(t @ W.T), t, zW, zb, U, G, sw, prob.lam, mu, bias)

    def schur(dW, db):  # S_μ v = (H_AA + μ) v − B D_μ⁻¹ Bᵀ v, and u = −D_μ⁻¹ Bᵀ v
        dy0 = logits_change(U, dW, db, sw, bias)
        u = -Dinv(A(dy0) @ W + G @ dW)
        HW, Hb = classifier_rows(A(dy0 + u @ W.T), u, dW, db, U, G, sw, prob.lam, mu, bias)
        return HW, Hb, u

    return Elimination(Dinv, Bop, schur)


# -- the symmetry null space (THEORY §8b) ------------------------------------------------------


def orbit_coefficients(mats, vecs, rtol: float = 1e-10):
    """The skew `A` of the projection of `V = vecs` onto the rotation tangent `{X A}` of
    `X = mats` (tuples, e.g. `(W, U)`): the solution of `M A + A M = Σ (XᵀV − VᵀX)`,
    `M = Σ XᵀX`, by one eigendecomposition (entries with `λ_i + λ_j ≤ rtol·λ_max` are
    directions no `X` reaches: 0)."""
    M = sum(X.T @ X for X in mats)
    R = sum(X.T @ V - V.T @ X for X, V in zip(mats, vecs))
    lam, Q = jnp.linalg.eigh(M)
    s = lam[:, None] + lam[None, :]
    keep = s > rtol * jnp.maximum(jnp.max(lam), 1e-300)
    At = jnp.where(keep, (Q.T @ R @ Q) / jnp.where(keep, s, 1.0), 0.0)
    return Q @ At @ Q.T


def orbit_projection(mats, vecs, rtol: float = 1e-10):
    """`(X A*)` for each `X` of `mats`: the Frobenius projection of `vecs` onto the tangent
    of the rotation orbit (`orbit_coefficients`)."""
    A = orbit_coefficients(mats, vecs, rtol)
    return tuple(X @ A for X in mats)


def ignored_bias_basis(loss: Loss, K: int, bias: bool) -> np.ndarray | None:
    """Orthonormal columns spanning the bias directions the objective does not see: those the
    loss ignores (PAL: `1`), all of `b` without a bias; None when there are none."""
    N = np.eye(K) if not bias else np.asarray(loss.ignored_directions(K), dtype=np.float64)
    N = N.reshape(-1, K)
    if not N.shape[0]:
        return None
    return np.linalg.qr(N.T)[0]


def null_projector(W, U, loss: Loss, bias: bool, lam) -> Callable:
    """The orthogonal projector onto the null space of `∇²F` at an optimum, on `(W, U, b)`
    tuples (`U = None`: on `(W, b)`, the Schur complement's null space). A bias direction
    the loss ignores is a symmetry only where `λ_b = 0`; under `vmap` that is decided per
    problem."""
    K = W.shape[0]
    N = ignored_bias_basis(loss, K, bias)
    mats = (W,) if U is None else (W, U)
    free = (lam[2] == 0) if bias else True

    def project(v):
        rot = orbit_projection(mats, v[:len(mats)])
        nb = jnp.zeros_like(v[-1]) if N is None else \
            jnp.where(free, jnp.asarray(N) @ (jnp.asarray(N).T @ v[-1]), 0.0)
        return (*rot, nb)

    return project
