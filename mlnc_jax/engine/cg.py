"""Truncated preconditioned conjugate gradients for the damped Newton system (THEORY §2).

Both engine paths solve `(∇²F + μI) p = −g` this way: the exact path on the Schur
complement of the prototype blocks (no preconditioner), the matrix-free path on all blocks
(`matrix_free`). CG stops at the forcing tolerance `‖r‖ ≤ η‖g‖` (superlinear Newton
convergence for `η → 0`), after `budget` iterations, or on curvature `≤ 0` (the damping did
not cover a negative eigenvalue; the step test then raises it). Vectors are tuples of
arrays, so any block structure works under `vmap`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["CGResult", "truncated_cg", "forcing_term", "dot"]


def dot(x, y):
    """`Σ_i ⟨x_i, y_i⟩` over tuples of arrays."""
    return sum(jnp.sum(a * b) for a, b in zip(x, y))


def forcing_term(residual, tol, cap=0.5):
    """CG's relative tolerance `η`: `√residual` (superlinear Newton convergence), but no
    tighter than the last step needs, `0.1·tol/residual` (the residual may have only a
    few decades left to fall: asking CG for more costs Hessian products and buys nothing),
    and at most `cap` (the Newton state tightens it while steps fail to halve the residual:
    under vanishing regularization the directions of curvature `O(λ)` that the residual
    waits for are the last ones CG resolves)."""
    eta = jnp.maximum(jnp.sqrt(residual), 0.1 * tol / residual)
    return jnp.minimum(jnp.minimum(0.5, cap), eta)


class CGResult(NamedTuple):
    p: Any      # the step (tuple)
    aux: Any    # Σ α_k aux(d_k): a linear image of the step the operator reports (tuple)
    r: Any      # residual (∇²F + μ) p + g
    z: Any      # preconditioned residual
    d: Any      # search direction
    rz: Any
    m: Any      # model value g·p + ½ pᵀ(∇²F + μ)p
    k: Any      # iterations
    neg: Any    # met curvature ≤ 0
    kneg: Any   # its Rayleigh quotient
    stop: Any


def truncated_cg(op: Callable, precond: Callable, g, aux0, eta, budget, done,
                 first_neg_step) -> CGResult:
    """CG on `A p = −g` with `op(d) -> (A d, aux(d))` and `precond(r) ≈ A⁻¹ r` (SPD);
    `aux0`: zeros shaped like `aux(d)` (a tuple, possibly empty).

    On curvature `≤ 0` at the first iteration the step is `first_neg_step` times the first
    direction `−precond(g)` (its model value stays exact); later, the iterate so far is kept.
    `done` (a problem already finished) skips the loop.
    """
    rr0 = dot(g, g)
    z0 = precond(g)
    zero = jnp.zeros((), rr0.dtype)

    def body(c: CGResult):
        Ad, aux = op(c.d)
        dAd = dot(c.d, Ad)
        neg = dAd <= 0
        alpha = jnp.where(neg, jnp.where(c.k == 0, first_neg_step, 0.0),
                          c.rz / jnp.where(neg, 1.0, dAd))
        rd = dot(c.r, c.d)
        r = tuple(x + alpha * y for x, y in zip(c.r, Ad))
        z = precond(r)
        rz = dot(r, z)
        beta = rz / jnp.maximum(c.rz, 1e-300)
        k = c.k + 1
        return CGResult(tuple(x + alpha * y for x, y in zip(c.p, c.d)),
                        tuple(x + alpha * y for x, y in zip(c.aux, aux)), r, z,
                        tuple(-x + beta * y for x, y in zip(z, c.d)), rz,
                        c.m + alpha * rd + 0.5 * alpha**2 * dAd, k, neg,
                        jnp.where(neg, dAd / jnp.maximum(dot(c.d, c.d), 1e-300), 0.0),
                        neg | (dot(r, r) <= eta**2 * rr0) | (k >= budget))

    c0 = CGResult(tuple(jnp.zeros_like(x) for x in g), tuple(aux0), g, z0,
                  tuple(-x for x in z0), dot(g, z0), zero, jnp.asarray(0), jnp.asarray(False),
                  zero, done | (rr0 == 0))
    return jax.lax.while_loop(lambda c: ~c.stop, body, c0)
