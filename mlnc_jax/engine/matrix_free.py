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

from ..model.losses import Loss
from .cg import dot, forcing_term, truncated_cg

__all__ = ["Direction", "RotatedSystem", "rotated_system", "matrix_free_direction", "logits_change",
           "classifier_rows"]


class Direction(NamedTuple):
    """A damped Newton direction and what the step's acceptance test needs of it."""
    pW: jax.Array
    pU: jax.Array
    pb: jax.Array
    pred: jax.Array   # predicted decrease of F (the model without μ)
    k: jax.Array      # CG iterations used
    neg: jax.Array    # CG met curvature below −μ
    kneg: jax.Array   # its Rayleigh quotient


def logits_change(U, dW, db, sw, bias: bool):
    """`U dWᵀ + √π dbᵀ`: the change of the (√π-scaled) logits under `(dW, ·, db)`."""
    y = U @ dW.T
    return y + sw[:, None] * db[None, :] if bias else y


def classifier_rows(dG, dU, dW, db, U, G, sw, lam, mu, bias: bool):
    """The `(W, b)` rows of `(∇²F + μI) v` given `dG = ∇²ℓ·(logit change)` (THEORY §2):
    `dGᵀU + GᵀdU + (λ_W + μ) dW` and `√πᵀdG + (λ_b + μ) db` (zeros without a bias). The
    exact path's Schur product (`newton`) uses them too."""
    HW = dG.T @ U + G.T @ dU + (lam[0] + mu) * dW
    Hb = (sw @ dG + (lam[2] + mu) * db) if bias else jnp.zeros_like(db)
    return HW, Hb


def _hvp(W, U, G, curv, sw, lam, mu, loss: Loss, bias: bool):
    """`v ↦ (∇²F + μI) v` in `(W, U, b)` (THEORY §2, the `√π` variables of `newton`)."""

    def apply(v):
        dW, dU, db = v
        dG = loss.hess_matvec(curv, dU @ W.T + logits_change(U, dW, db, sw, bias))
        HW, Hb = classifier_rows(dG, dU, dW, db, U, G, sw, lam, mu, bias)
        return HW, dG @ W + G @ dW + (lam[1] + mu) * dU, Hb

    return apply


def _jacobi(W, U, curv, w, lam, mu, loss: Loss, bias: bool):
    """The Hessian's diagonal in the current frame, `(D_W [K, d], D_U [T, d], D_b [K])`."""
    lw, lh, lb = lam[0], lam[1], lam[2]
    diag_a = loss.hess_diagonal(curv, None)            # [T, K]: diag ∇²ℓ_s
    DW = diag_a.T @ (U * U) + lw + mu                   # Σ_s a_sk ũ_sj²
    DU = loss.hess_diagonal(curv, W) + lh + mu          # diag(W̃ᵀ∇²ℓ_s W̃)
    Db = (w @ diag_a + lb + mu) if bias else jnp.ones_like(W[:, 0])
    return DW, DU, Db


class RotatedSystem(NamedTuple):
    """The damped Newton system of one state in the rotated frame (module doc)."""
    Q: jax.Array      # [d, d] the frame: columns of W and U are rotated by it
    hvp: Any          # v ↦ (∇²F + μI) v on (W̃, Ũ, b) tuples
    diag: tuple       # the preconditioner: the Hessian's diagonal (D_W, D_U, D_b)
    g: tuple          # the gradient in the frame


def rotated_system(st, prob, loss: Loss, bias: bool, mu) -> RotatedSystem:
    """Rotate `newton.State` `st` into the eigenbasis of the balanced Gram matrix and build
    the Hessian product and its diagonal there."""
    lam, w = prob.lam, prob.w
    _, Q = jnp.linalg.eigh(lam[0] * (st.W.T @ st.W) + lam[1] * (st.U.T @ st.U))
    W, U = st.W @ Q, st.U @ Q
    g = (st.gW @ Q, st.gU @ Q, st.gb if bias else jnp.zeros_like(st.gb))
    hvp = _hvp(W, U, st.G, st.curv, jnp.sqrt(w), lam, mu, loss, bias)
    return RotatedSystem(Q, hvp, _jacobi(W, U, st.curv, w, lam, mu, loss, bias), g)


def matrix_free_direction(st, prob, loss: Loss, bias: bool, mu, budget, tol) -> Direction:
    """The damped Newton direction of `newton.State` `st` by matrix-free PCG (module doc)."""
    Q, hvp, (DW, DU, Db), g = rotated_system(st, prob, loss, bias, mu)
    precond = lambda r: (r[0] / DW, r[1] / DU, r[2] / Db)
    eta = forcing_term(st.residual, tol)
    # curvature below −μ at once: the preconditioned gradient step −precond(g)
    c = truncated_cg(lambda d: (hvp(d), ()), precond, g, (), eta, budget, st.done, 1.0)
    pW, pU, pb = c.p
    pred = -(c.m - 0.5 * mu * dot(c.p, c.p))
    return Direction(pW @ Q.T, pU @ Q.T, pb, pred, c.k, c.neg, c.kneg)
