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
applying the preconditioner inside CG costs only elementwise work (the product, diagonal and
frame are `hessian`'s). `bench/bench_scaling.py` measures it against the exact path.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from ..model.losses import Loss
from .cg import dot, forcing_term, truncated_cg
from .hessian import rotated_system

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


def matrix_free_direction(st, prob, loss: Loss, bias: bool, mu, budget, tol) -> Direction:
    """The damped Newton direction of `newton.State` `st` by matrix-free PCG (module doc)."""
    Q, hvp, (DW, DU, Db), g = rotated_system(st, prob, loss, bias, mu)
    precond = lambda r: (r[0] / DW, r[1] / DU, r[2] / Db)
    eta = forcing_term(st.residual, tol, st.eta_cap)
    # curvature below −μ at once: the preconditioned gradient step −precond(g)
    c = truncated_cg(lambda d: (hvp(d), ()), precond, g, (), eta, budget, st.done, 1.0)
    pW, pU, pb = c.p
    pred = -(c.m - 0.5 * mu * dot(c.p, c.p))
    return Direction(pW @ Q.T, pU @ Q.T, pb, pred, c.k, c.neg, c.kneg)
