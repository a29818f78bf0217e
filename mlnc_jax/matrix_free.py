"""The matrix-free Newton direction for large label spaces (THEORY §2; the engine's large-K
path, chosen by `newton.choose_method`).

The exact prototype elimination of `newton` forms and factors one `r × r` block per label
set, about `T·r²·(K + r/3)` flops and `T·r²` memory per step: for delicious (K = 983,
T = 15,806) that is 10¹³ flops and 120 GB. Here the damped Newton system
`(∇²F + μI) p = −∇F` is solved by preconditioned conjugate gradients on all blocks at once,
touching the Hessian only through products, each three `[T, 2K] × [2K, d]`-sized matmuls
(`12·T·K·d` flops) and no `T × K × d` array.

Preconditioner: the Hessian's diagonal in a rotated frame. The objective is invariant under
`(W, U) → (WQ, UQ)` for orthogonal `Q`; in the eigenbasis `Q` of `λ_W WᵀW + λ_H UᵀU` (the two
Gram matrices agree up to scale at a critical point, THEORY §2) the prototype blocks
`λ_H I + W̃ᵀ∇²ℓ_s W̃` and the classifier block `λ_W I + Σ_s ∇²ℓ_s ⊗ ũ_s ũ_sᵀ` are close to
diagonal: exactly so for MSE at balance, up to the off-diagonal curvature of the loss
otherwise. The frame is rotated once per step (two matmuls and a `d × d` eigensolve), so
applying the preconditioner inside CG costs only elementwise work. `bench/bench_scaling.py`
measures it against the exact path.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .losses import Loss

__all__ = ["Direction", "matrix_free_direction"]


class Direction(NamedTuple):
    """A damped Newton direction and what the step's acceptance test needs of it."""
    pW: jax.Array
    pU: jax.Array
    pb: jax.Array
    pred: jax.Array   # predicted decrease of F (the model without μ)
    k: jax.Array      # CG iterations used
    neg: jax.Array    # CG met curvature below −μ
    kneg: jax.Array   # its Rayleigh quotient


def _dot(x, y):
    return sum(jnp.sum(a * b) for a, b in zip(x, y))


def _hvp(W, U, G, curv, sw, lam, mu, loss: Loss, bias: bool):
    """`v ↦ (∇²F + μI) v` in `(W, U, b)` (THEORY §2, the `√π` variables of `newton`)."""
    lw, lh, lb = lam[0], lam[1], lam[2]

    def apply(v):
        dW, dU, db = v
        y = dU @ W.T + U @ dW.T
        if bias:
            y = y + sw[:, None] * db[None, :]
        dG = loss.hess_matvec(curv, y)
        HW = dG.T @ U + G.T @ dU + (lw + mu) * dW
        HU = dG @ W + G @ dW + (lh + mu) * dU
        Hb = (sw @ dG + (lb + mu) * db) if bias else jnp.zeros_like(db)
        return HW, HU, Hb

    return apply


def _jacobi(W, U, curv, w, lam, mu, loss: Loss, bias: bool):
    """The Hessian's diagonal in the current frame, `(D_W [K, d], D_U [T, d], D_b [K])`."""
    lw, lh, lb = lam[0], lam[1], lam[2]
    diag_a = loss.hess_diagonal(curv, None)            # [T, K]: diag ∇²ℓ_s
    DW = diag_a.T @ (U * U) + lw + mu                   # Σ_s a_sk ũ_sj²
    DU = loss.hess_diagonal(curv, W) + lh + mu          # diag(W̃ᵀ∇²ℓ_s W̃)
    Db = (w @ diag_a + lb + mu) if bias else jnp.ones_like(W[:, 0])
    return DW, DU, Db


class _PCG(NamedTuple):
    p: Any      # iterate (W, U, b)
    r: Any      # residual (∇²F + μ) p + g
    z: Any      # preconditioned residual
    d: Any      # search direction
    rz: Any
    m: Any      # model value g·p + ½ pᵀ(∇²F + μ)p
    k: Any
    neg: Any
    kneg: Any
    stop: Any


def _pcg(hvp, precond, g, eta, budget, done):
    """Truncated preconditioned CG on `(∇²F + μI) p = −g`; stops at the forcing tolerance
    `‖r‖ ≤ η‖g‖`, on curvature below −μ, or after `budget` iterations."""
    rr0 = _dot(g, g)
    z0 = precond(g)
    zero = jnp.zeros((), rr0.dtype)

    def body(c: _PCG):
        Hd = hvp(c.d)
        dHd = _dot(c.d, Hd)
        neg = dHd <= 0
        # curvature below −μ on the first iteration: the preconditioned gradient step, whose
        # decrease the model still predicts exactly; later: keep the iterate so far
        alpha = jnp.where(neg, jnp.where(c.k == 0, 1.0, 0.0), c.rz / jnp.where(neg, 1.0, dHd))
        rd = _dot(c.r, c.d)
        p = tuple(x + alpha * y for x, y in zip(c.p, c.d))
        r = tuple(x + alpha * y for x, y in zip(c.r, Hd))
        z = precond(r)
        rz = _dot(r, z)
        beta = rz / jnp.maximum(c.rz, 1e-300)
        k = c.k + 1
        stop = neg | (_dot(r, r) <= eta**2 * rr0) | (k >= budget)
        return _PCG(p, r, z, tuple(-x + beta * y for x, y in zip(z, c.d)), rz,
                    c.m + alpha * rd + 0.5 * alpha**2 * dHd, k, neg,
                    jnp.where(neg, dHd / jnp.maximum(_dot(c.d, c.d), 1e-300), 0.0), stop)

    c0 = _PCG(tuple(jnp.zeros_like(x) for x in g), g, z0, tuple(-x for x in z0), _dot(g, z0),
              zero, jnp.asarray(0), jnp.asarray(False), zero, done | (rr0 == 0))
    return jax.lax.while_loop(lambda c: ~c.stop, body, c0)


def matrix_free_direction(st, prob, loss: Loss, bias: bool, mu, budget) -> Direction:
    """The damped Newton direction of `newton.State` `st` by matrix-free PCG (module doc)."""
    lam, w = prob.lam, prob.w
    sw = jnp.sqrt(w)
    # the rotated frame: the eigenbasis of the balanced Gram matrix
    _, Q = jnp.linalg.eigh(lam[0] * (st.W.T @ st.W) + lam[1] * (st.U.T @ st.U))
    W, U = st.W @ Q, st.U @ Q
    g = (st.gW @ Q, st.gU @ Q, st.gb if bias else jnp.zeros_like(st.gb))
    hvp = _hvp(W, U, st.G, st.curv, sw, lam, mu, loss, bias)
    DW, DU, Db = _jacobi(W, U, st.curv, w, lam, mu, loss, bias)
    precond = lambda r: (r[0] / DW, r[1] / DU, r[2] / Db)
    eta = jnp.minimum(0.5, jnp.sqrt(st.residual))  # forcing term: superlinear convergence
    c = _pcg(hvp, precond, g, eta, budget, st.done)
    pW, pU, pb = c.p
    pred = -(c.m - 0.5 * mu * _dot(c.p, c.p))
    return Direction(pW @ Q.T, pU @ Q.T, pb, pred, c.k, c.neg, c.kneg)
