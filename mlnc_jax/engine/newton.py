"""The one-problem Newton core of every solve (THEORY §2, §2c, §3): pure, jit- and vmap-ready.

Variables `(W [K, d], U [T, d], b [K])` with `U_s = √π_s h_s`: the prototype blocks of the
Hessian, `∂²F/∂U_s² = λ_H I + Wᵀ ∇²ℓ_s W`, do not depend on `π_s`, however rare the set.

A damped Newton (Levenberg-Marquardt) step solves `(∇²F + μI) p = −∇F`, `μ = θ‖∇F‖`:
the prototype blocks are eliminated exactly (a QR of `Wᵀ` reduces each to an `r × r`
Cholesky, `r = min(d, K)`) and conjugate gradients solve the small `(W, b)` Schur
complement, whose null space is the rotation symmetry. `θ` follows the ratio of actual to
predicted decrease; negative curvature met by CG (near saddles such as `W = 0`) raises it.

Stopping follows THEORY §2c: per block, independent of `π_s`,

* prototypes: `‖r_s‖ / (‖Wᵀg_s‖ + λ_H‖h_s‖ + f_H)`, `r_s = Wᵀg_s + λ_H h_s`;
* classifier: `‖∇_W F‖ / (Σ_s π_s‖g_s‖‖h_s‖ + λ_W‖W‖ + f_W)`;
* bias: `‖∇_b F‖ / (Σ_s π_s‖g_s‖ + λ_b‖b‖)`;

with floors `f_H = λ_H^{3/4} λ_W^{1/4}`, `f_W = λ_W^{3/4} λ_H^{1/4}`, the natural scales
of the two blocks (`‖h‖ ~ (λ_W/λ_H)^{1/4}`, `‖W‖ ~ (λ_H/λ_W)^{1/4}`), which keep the test
meaningful where the solution collapses to `W = 0`. `residual` is the largest of them;
a problem is done when `residual ≤ tol`.

Vanishing regularization (THEORY §2c) needs two more things of a step. The prototypes of
multi-label sets sit in valleys of `O(1)` curvature (the in-set logits must stay equal) that
bend as `W` moves, while the progress along the valleys has `O(λ)` curvature: a trial point's
prototypes are refined by a Newton step on each set's own strictly convex problem given
`(W, b)` (`refine_prototypes`, on the exact path), so a step follows the valley
instead of leaving it. And the actual decrease of `F` is measured as a sum of per-set changes
without cancellation (`objective_change`, `Loss.change`), down to the round-off of the step
rather than of `F`: near an optimum `F` changes by less than its own last digit.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ..model.losses import Loss
from .certificate import gradient_gram_eigenvalues, rho_from_eigenvalues
from .cg import forcing_term, truncated_cg
from .hessian import Point, eliminate, row_sum
from .matrix_free import Direction, matrix_free_direction

__all__ = ["Problem", "State", "Summary", "METHODS", "value_grad", "block_residual", "gradient_roundoff",
           "init_state", "exact_direction", "newton_step", "choose_method", "summarize"]


class Problem(NamedTuple):
    Y: jax.Array      # [T, K] label sets (padding rows: zeros)
    w: jax.Array      # [T] weights π_s (padding rows: 0)
    lam: jax.Array    # [3] λ_W, λ_H, λ_b


class State(NamedTuple):
    W: jax.Array
    U: jax.Array
    b: jax.Array
    f: jax.Array         # objective
    gW: jax.Array        # gradient in (W, U, b)
    gU: jax.Array
    gb: jax.Array
    gnorm: jax.Array     # ‖∇F‖ in (W, U, b): sets the damping
    residual: jax.Array  # largest relative block residual (THEORY §2c): the stopping test
    G: jax.Array         # [T, K] √π_s ∇ℓ(z_s)
    curv: Any            # ∇²ℓ(z_s) in the loss record's structured form
    theta: jax.Array     # damping μ = θ‖∇F‖
    done: jax.Array
    stalled: jax.Array   # no progress possible: the damping blew up, or round-off stops it
    steps: jax.Array     # Newton steps taken
    best: jax.Array      # smallest residual so far
    stale: jax.Array     # consecutive steps without progress
    cg_budget: jax.Array  # CG iterations allowed in the next step (adapts, ≤ max_cg)
    cg_total: jax.Array   # CG iterations spent so far (Hessian products: the cost measure)
    lag: jax.Array        # consecutive steps that did not halve the best residual
    eta_cap: jax.Array    # CG's forcing tolerance at most this; ÷10 per lagging step
    #                       (`cg.forcing_term`)


class Summary(NamedTuple):
    objective: jax.Array
    grad_norm: jax.Array   # ‖∇F‖ in (W, H, b)
    residual: jax.Array
    certificate: jax.Array
    gram_eigenvalues: jax.Array  # of GᵀG = Σ π_s g_s g_sᵀ, ascending [K]
    H: jax.Array
    finite: jax.Array


def _sqnorm(*arrs):
    return sum(jnp.sum(x * x) for x in arrs)


def _inv_sqrt_weights(w):
    keep = w > 0
    return jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, w, 1.0)), 0.0)


def _logits(W, U, b, w, bias: bool):
    """`z_s = W h_s (+ b)` with `h_s = U_s/√π_s` (a padding row's `h` is 0)."""
    z = (U * _inv_sqrt_weights(w)[:, None]) @ W.T
    return z + b if bias else z


def value_grad(W, U, b, prob: Problem, loss: Loss, bias: bool):
    """Objective, gradient in `(W, U, b)`, `G = [√π_s g_s]` and the loss curvature."""
    Y, w, lam = prob
    lw, lh, lb = lam[0], lam[1], lam[2]
    mask = w > 0
    sw = jnp.sqrt(w)
    z = _logits(W, U, b, w, bias)
    l, g, curv = loss.derivatives(z, jnp.where(mask[:, None], Y, 1.0))
    keep = lambda x: jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x, 0.0)
    l, g, curv = keep(l), keep(g), jax.tree_util.tree_map(keep, curv)
    G = g * sw[:, None]
    f = jnp.sum(w * l) + 0.5 * lw * jnp.sum(W * W) + 0.5 * lh * jnp.sum(U * U)
    gW = G.T @ U + lw * W
    gU = G @ W + lh * U
    if bias:
        f = f + 0.5 * lb * jnp.sum(b * b)
        gb = row_sum(sw, G) + lb * b
    else:
        gb = jnp.zeros_like(b)
    return f, gW, gU, gb, G, curv


_ROUNDOFF = 4 * 2.0**-52  # a few ulps: what a computed residual carries at its best


def gradient_roundoff(W, U, b, curv, prob: Problem, loss: Loss, bias: bool):
    """`‖δg_s‖` per set: the loss gradient's round-off, `∇²ℓ_s` applied to the error bound
    `ε(|W||h_s| + |b|)` of the computed logits (THEORY §2c: under vanishing regularization
    `g_s = O(λ)` and this is what limits the attainable residual, e.g. `z − y` for MSE)."""
    H = jnp.abs(U) * _inv_sqrt_weights(prob.w)[:, None]
    dz = H @ jnp.abs(W).T + (jnp.abs(b) if bias else 0.0)
    dg = jnp.abs(loss.hess_matvec(curv, dz))
    return _ROUNDOFF * jnp.sqrt(jnp.sum(dg * dg, -1))


def set_changes(W0, U0, b0, W1, U1, b1, prob: Problem, loss: Loss, bias: bool):
    """Per set, the change of `π_s ℓ(z_s) + λ_H‖U_s‖²/2` from point 0 to point 1 without
    cancellation (`Loss.change` of the logits' own change), and its round-off bound."""
    w, lh = prob.w, prob.lam[1]
    mask = w > 0
    dW, dU = W1 - W0, U1 - U0
    z0 = _logits(W0, U0, b0, w, bias)
    # H₁W₁ᵀ − H₀W₀ᵀ = H₀dWᵀ + dH W₁ᵀ: the change formed from the changes
    dz = _logits(dW, U0, b1 - b0, w, bias) + _logits(W1, dU, b0, w, False)
    Y = jnp.where(mask[:, None], prob.Y, 1.0)
    dl = jnp.where(mask, w * loss.change(z0, jnp.where(mask[:, None], dz, 0.0), Y), 0.0)
    change = dl + lh * jnp.sum(dU * (U0 + 0.5 * dU), -1)
    bound = _ROUNDOFF * (jnp.where(mask, w * jnp.sum(jnp.abs(dz) * (1.0 + Y), -1), 0.0)
                         + lh * jnp.sum(jnp.abs(dU * U0), -1))
    return change, bound


def objective_change(W0, U0, b0, W1, U1, b1, prob: Problem, loss: Loss, bias: bool):
    """`F(x₁) − F(x₀)` summed from `set_changes` plus the classifier's and bias's
    regularizers, and its round-off bound."""
    lw, lb = prob.lam[0], prob.lam[2]
    change, bound = set_changes(W0, U0, b0, W1, U1, b1, prob, loss, bias)
    dW, db = W1 - W0, b1 - b0
    total = jnp.sum(change) + lw * jnp.sum(dW * (W0 + 0.5 * dW))
    bound = jnp.sum(bound) + _ROUNDOFF * lw * jnp.sum(jnp.abs(dW * W0))
    if bias:
        total = total + lb * jnp.sum(db * (b0 + 0.5 * db))
        bound = bound + _ROUNDOFF * lb * jnp.sum(jnp.abs(db * b0))
    return total, bound


def refine_prototypes(W, U, b, G, curv, gU, prob: Problem, loss: Loss, bias: bool):
    """One Newton step `U_s ← U_s − D_s⁻¹ ∂F/∂U_s` on every prototype given `(W, b)` (each
    set's problem is strictly convex; `D_s` factored at the point, `hessian.eliminate`),
    shortened to change no logit by more than `loss.refine_step`, kept
    per set where its objective falls, or where the change is below round-off and the set's
    gradient falls. `G`, `curv`, `gU`: the point's, from `value_grad`."""
    sq = lambda x: jnp.sum(x * x, -1)
    dU = -eliminate(Point(W, U, b, G, curv), prob, loss, bias, 0.0).Dinv(gU)
    # at most `loss.refine_step` of logit per set: beyond ~1 the quadratic model of
    # a softmax is not one, and along curvature ~λ_H a full step is ~1/λ_H long
    dz = jnp.max(jnp.abs(_logits(W, dU, b, prob.w, False)), -1)
    U1 = U + dU * jnp.minimum(1.0, loss.refine_step / jnp.maximum(dz, 1e-300))[:, None]
    gU1 = value_grad(W, U1, b, prob, loss, bias)[2]
    change, bound = set_changes(W, U, b, W, U1, b, prob, loss, bias)
    better = (change < -bound) | ((change <= bound) & (sq(gU1) < sq(gU)))
    return jnp.where(better[:, None], U1, U)


def block_residual(W, U, b, gW, gU, gb, G, prob: Problem, bias: bool, dg=0.0):
    """Largest relative block residual of THEORY §2c (see the module docstring); `dg`
    (`gradient_roundoff`) is subtracted from each block's residual norm before dividing by
    its scale: what round-off alone leaves is not a residual."""
    w, lam = prob.w, prob.lam
    lw, lh, lb = lam[0], lam[1], lam[2]
    sw = jnp.sqrt(w)
    nrm = lambda x: jnp.sqrt(jnp.sum(x * x, -1))
    excess = lambda r, floor: jnp.maximum(r - floor, 0.0)
    f_h = lh ** 0.75 * lw ** 0.25
    f_w = lw ** 0.75 * lh ** 0.25
    dg = jnp.broadcast_to(dg, w.shape)
    # every term of the prototype test carries √π_s: divide it out of both sides
    scale_h = nrm(G @ W) + lh * nrm(U) + sw * f_h
    r_h = excess(nrm(gU), sw * dg * jnp.sqrt(jnp.sum(W * W)))
    res_h = jnp.where(w > 0, r_h / jnp.where(w > 0, scale_h, 1.0), 0.0)
    gnorms = nrm(G)
    scale_w = jnp.sum(gnorms * nrm(U)) + lw * jnp.sqrt(jnp.sum(W * W)) + f_w
    r_w = excess(jnp.sqrt(jnp.sum(gW * gW)), jnp.sum(sw * dg * nrm(U)))
    res = jnp.maximum(jnp.max(res_h), r_w / scale_w)
    if bias:
        scale_b = jnp.sum(sw * gnorms) + lb * jnp.sqrt(jnp.sum(b * b)) + 1e-300
        res = jnp.maximum(res, excess(jnp.sqrt(jnp.sum(gb * gb)), jnp.sum(sw * dg)) / scale_b)
    return res


def init_state(W, U, b, prob: Problem, tol, theta0, loss: Loss, bias: bool) -> State:
    f, gW, gU, gb, G, curv = value_grad(W, U, b, prob, loss, bias)
    dg = gradient_roundoff(W, U, b, curv, prob, loss, bias)
    res = block_residual(W, U, b, gW, gU, gb, G, prob, bias, dg)
    return State(W, U, b, f, gW, gU, gb, jnp.sqrt(_sqnorm(gW, gU, gb)), res, G, curv,
                 jnp.asarray(theta0, f.dtype), res <= tol, jnp.asarray(False),
                 jnp.asarray(0, jnp.int32), res, jnp.asarray(0, jnp.int32),
                 jnp.asarray(_CG_START, jnp.int32), jnp.asarray(0, jnp.int32),
                 jnp.asarray(0, jnp.int32), jnp.asarray(0.5, f.dtype))


_CG_START = 8      # CG iterations of the first step; doubled while CG runs out of them
_ETA_FLOOR = 1e-12  # CG resolves no more than float64 allows
_SLOW_STEPS = 3    # steps that fail to halve the residual before CG's forcing term tightens ×0.1
_STALE_STEPS = 30  # steps without a 10 % better residual or a real decrease of F


# -- the damped Newton step ---------------------------------------------------------------------


def exact_direction(st: State, prob: Problem, loss: Loss, bias: bool, mu, budget,
                    tol) -> Direction:
    """The damped Newton direction with the prototype blocks eliminated exactly."""
    Dinv, Bop, schur = eliminate(st, prob, loss, bias, mu)
    t = Dinv(st.gU)
    BW, Bb = Bop(t)
    bmask = 1.0 if bias else 0.0
    eta = forcing_term(st.residual, tol, st.eta_cap)

    def op(d):  # the Schur product; its U part −D_μ⁻¹Bᵀd accumulates into the step
        HW, Hb, u = schur(*d)
        return (HW, Hb), (u,)

    # curvature below −μ at once: the damped gradient step −ĝ/μ
    cg = truncated_cg(op, lambda r: r, (st.gW - BW, (st.gb - Bb) * bmask),
                      (jnp.zeros_like(st.U),), eta, budget, st.done, 1.0 / mu)
    (pW, pb), (pU_schur,) = cg.p, cg.aux
    # the full step: p_U = −D_μ⁻¹(g_U + Bᵀp_A); the model value of F (without μ)
    pU = pU_schur - t
    pred = -(cg.m - 0.5 * jnp.sum(st.gU * t) - 0.5 * mu * _sqnorm(pW, pb, pU))
    return Direction(pW, pU, pb * bmask, pred, cg.k, cg.neg, cg.kneg)


METHODS = ("exact", "matrix_free")

# What one step of the exact path costs beyond the matrix-free one, in Hessian products:
# the matrix-free path needs more of them (its preconditioner is only diagonal), but the
# exact path's batched Cholesky and triangular solves run at a few GFLOP/s on a CPU where
# matmuls run at 50+. Calibrated on bench/RESULTS.md: BCE is 2.6× faster matrix-free at
# K = 40 and 4× at K = 80; PAL is 1.25× slower matrix-free at K = 53 and 1.2× faster at 159.
_EXTRA_CG = 8
_EXACT_MAX_BYTES = 2 << 30  # the per-row factors `T·r²` of the exact path, at most


def step_flops(T: int, K: int, d: int, method: str, cg_iters: int) -> float:
    """Flops of one Newton step with `cg_iters` CG iterations (the matmul terms only)."""
    r = min(d, K)
    hvp = 12.0 * T * K * d
    if method == "exact":
        return 2.0 * T * K * r * r + T * r**3 / 3.0 + cg_iters * (hvp + 4.0 * T * r * d)
    return 9.0 * d**3 + 8.0 * T * K * d + 4.0 * T * d * d + cg_iters * hvp


def choose_method(T: int, K: int, d: int) -> str:
    """"exact" unless forming and factoring the `T` prototype blocks costs more than the
    extra CG iterations the matrix-free path needs, or more memory than `_EXACT_MAX_BYTES`."""
    r = min(d, K)
    setup = 2.0 * T * K * r * r + T * r**3 / 3.0
    if setup > _EXTRA_CG * 12.0 * T * K * d or 16 * T * r * r > _EXACT_MAX_BYTES:
        return "matrix_free"
    return "exact"


def _tighten_forcing(st: State, acc, live, rho, res1):
    """`(lag, eta_cap)` after a step. Steps that keep failing to halve the residual are
    limited by CG's inexactness (under vanishing regularization the O(λ)-curvature
    directions are the last CG resolves): after `_SLOW_STEPS` of them the cap on CG's
    forcing term falls ×0.1. Only trusted steps (ρ > 0.75) count: in the global phase the
    model, not CG, limits the step; a problem whose residual falls keeps its forcing term."""
    halved = acc & (res1 <= 0.5 * st.best)
    lag = jnp.where(halved, 0, st.lag + (acc & (rho > 0.75) & ~halved).astype(st.lag.dtype))
    slow = live & (lag >= _SLOW_STEPS)
    return lag, jnp.where(slow, jnp.maximum(0.1 * st.eta_cap, _ETA_FLOOR), st.eta_cap)


def newton_step(st: State, prob: Problem, tol, max_steps, loss: Loss, bias: bool,
                max_cg: int, method: str = "exact") -> State:
    """One damped Newton step; a problem that is done, stalled or out of steps stays frozen.
    `method` picks how the direction is found (`choose_method`); the step test is shared."""
    mu = st.theta * st.gnorm
    budget = jnp.minimum(st.cg_budget, max_cg)
    find = exact_direction if method == "exact" else matrix_free_direction
    dr = find(st, prob, loss, bias, mu, budget, tol)
    # a step whose CG ran out of iterations gets twice as many next time; one that needed
    # few gives some back (hard problems pay for CG, easy ones do not)
    ran_out = (dr.k >= budget) & ~dr.neg
    cg_budget = jnp.where(ran_out, jnp.minimum(2 * budget, max_cg),
                          jnp.where(dr.k <= budget // 4, jnp.maximum(budget // 2, 4), budget))
    pred = dr.pred
    W1, U1, b1 = st.W + dr.pW, st.U + dr.pU, st.b + dr.pb
    f1, gW1, gU1, gb1, G1, curv1 = value_grad(W1, U1, b1, prob, loss, bias)
    if method == "exact" and loss.refine_step > 0:  # the valleys of the module doc
        U1 = refine_prototypes(W1, U1, b1, G1, curv1, gU1, prob, loss, bias)
        f1, gW1, gU1, gb1, G1, curv1 = value_grad(W1, U1, b1, prob, loss, bias)
    res1 = block_residual(W1, U1, b1, gW1, gU1, gb1, G1, prob, bias,
                          gradient_roundoff(W1, U1, b1, curv1, prob, loss, bias))
    dF, dF_roundoff = objective_change(st.W, st.U, st.b, W1, U1, b1, prob, loss, bias)
    ared = -dF
    small = 1e-12 * jnp.maximum(jnp.abs(st.f), 1e-30)
    # below the round-off of the measured change, judge the step by the block residual
    rho = jnp.where(pred <= dF_roundoff,
                    jnp.where((res1 < st.residual) & (ared >= -dF_roundoff), 1.0, -1.0),
                    ared / jnp.where(pred > 0, pred, 1.0))
    rho = jnp.where(jnp.isfinite(f1) & jnp.isfinite(res1) & (pred > 0), rho, -jnp.inf)
    live = ~(st.done | st.stalled) & (st.steps < max_steps)
    acc = (rho > 1e-4) & live
    theta = jnp.where(rho > 0.75, st.theta / 3.0, jnp.where(rho > 0.25, st.theta, 2.0 * st.theta))
    theta = jnp.where(acc, theta, 4.0 * st.theta)
    # negative curvature: make μ exceed it next time
    theta = jnp.where(dr.neg, jnp.maximum(theta, (mu + 2.0 * jnp.abs(dr.kneg)) / st.gnorm), theta)
    theta = jnp.clip(theta, 1e-6, 1e12)
    sel = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(acc, a, b), new, old)
    residual = sel(res1, st.residual)
    # progress: a better residual, or a decrease of F above its round-off
    progress = acc & ((res1 < 0.9 * st.best) | (ared > 1e3 * small))
    stale = jnp.where(progress, 0, st.stale + live.astype(st.stale.dtype))
    lag, eta_cap = _tighten_forcing(st, acc, live, rho, res1)
    return State(sel(W1, st.W), sel(U1, st.U), sel(b1, st.b), sel(f1, st.f), sel(gW1, st.gW),
                 sel(gU1, st.gU), sel(gb1, st.gb),
                 sel(jnp.sqrt(_sqnorm(gW1, gU1, gb1)), st.gnorm), residual, sel(G1, st.G),
                 sel(curv1, st.curv), jnp.where(live, theta, st.theta),
                 st.done | (residual <= tol),
                 st.stalled | (live & ((theta >= 1e12) | (stale >= _STALE_STEPS))),
                 st.steps + live.astype(st.steps.dtype), jnp.minimum(st.best, residual), stale,
                 jnp.where(live, cg_budget, st.cg_budget).astype(st.cg_budget.dtype),
                 st.cg_total + jnp.where(live, dr.k, 0).astype(st.cg_total.dtype),
                 lag.astype(st.lag.dtype), eta_cap)


def summarize(W, U, b, prob: Problem, loss: Loss, bias: bool) -> Summary:
    """Objective, ‖∇F‖ in `(W, H, b)`, block residual, certificate ρ (THEORY §3) and `H`."""
    f, gW, gU, gb, G, curv = value_grad(W, U, b, prob, loss, bias)
    sw = jnp.sqrt(prob.w)
    H = U * _inv_sqrt_weights(prob.w)[:, None]
    gn = jnp.sqrt(_sqnorm(gW, gU * sw[:, None]) + (_sqnorm(gb) if bias else 0.0))
    res = block_residual(W, U, b, gW, gU, gb, G, prob, bias,
                         gradient_roundoff(W, U, b, curv, prob, loss, bias))
    eigs = gradient_gram_eigenvalues(G)
    rho = rho_from_eigenvalues(eigs, prob.lam[0], prob.lam[1])
    finite = jnp.isfinite(f) & jnp.isfinite(res) & jnp.all(jnp.isfinite(W)) & jnp.all(jnp.isfinite(H))
    return Summary(f, gn, res, rho, eigs, H, finite)
