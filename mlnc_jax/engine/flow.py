"""Gradient flows of the reduced UFM as dynamics (THEORY §2): trajectories, not a solver.

Two flows with the same critical points:

* `metric="euclidean"`: `dX/dt = −∇F(X)` in `(W, H, b)`, the UFM's own training dynamics
  (full-batch gradient descent on the per-sample objective with its rows grouped);
* `metric="equal_curvature"`: gradient descent in `(W, U, b)`, `U_s = √π_s h_s`, i.e.
  `dh_s/dt = −(Wᵀ g_s + λ_H h_s)`: every prototype moves at the same rate however rare
  its label set.

Explicit Euler with a step from a power-iteration curvature estimate; the trace records the
objective, ‖∇F‖ (Euclidean, in `(W, H, b)`), ρ of §3 and, given a reference, the relative
Gram errors at log-spaced steps. Certified optima come from `mlnc_jax.solve`; a flow's end
point can start it (`solve(..., init=params)`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from ..model.errors import InputError, SolverDivergedError
from ..model.labels import LabelDistribution
from ..model.ufm import UFMConfig, UFMParams, objective
from .certificate import certificate

__all__ = ["FlowTrace", "METRICS", "gradient_flow", "gradient_flow_batch", "estimate_step_size"]

METRICS = ("equal_curvature", "euclidean")


class FlowTrace(NamedTuple):
    """Gradient-flow record at log-spaced steps (`time = step · step_size`).

    `gram_w_error`, `gram_h_error`: relative Frobenius errors of `W Wᵀ` and `H Hᵀ` to the
    reference (NaN without one); `certificate`: ρ of THEORY §3 along the flow.
    """

    step: jax.Array
    time: jax.Array
    objective: jax.Array
    grad_norm: jax.Array
    gram_w_error: jax.Array
    gram_h_error: jax.Array
    certificate: jax.Array


def _inv_sqrt(weights):
    return jnp.where(weights > 0, 1.0 / jnp.sqrt(jnp.where(weights > 0, weights, 1.0)), 0.0)


def to_vars(params: UFMParams, weights, metric: str) -> UFMParams:
    """The flow's variables: `(W, H, b)` (euclidean) or `(W, U, b)` (equal curvature)."""
    return params if metric == "euclidean" else params._replace(H=params.H * jnp.sqrt(weights)[:, None])


def from_vars(x: UFMParams, weights, metric: str) -> UFMParams:
    return x if metric == "euclidean" else x._replace(H=x.H * _inv_sqrt(weights)[:, None])


def _vars_objective(x, label_sets, weights, config, metric):
    return objective(from_vars(x, weights, metric), label_sets, weights, config)


def split_config(config: UFMConfig):
    """`(static, lams)`: the config with λ's zeroed (a jit static argument, so changing λ
    does not recompile) and the λ's as an array `[λ_W, λ_H, λ_b]`."""
    lams = jnp.asarray([config.lambda_w, config.lambda_h, config.lambda_b])
    return config._replace(lambda_w=0.0, lambda_h=0.0, lambda_b=0.0), lams


def merge_config(static: UFMConfig, lams) -> UFMConfig:
    return static._replace(lambda_w=lams[0], lambda_h=lams[1], lambda_b=lams[2])


def _original_grad_norm(gx: UFMParams, weights, config, metric):
    """‖∇F‖ in `(W, H, b)` from the gradient in the flow's variables (`∂F/∂h_s = √π_s ∂F/∂U_s`)."""
    gh = gx.H if metric == "euclidean" else gx.H * jnp.sqrt(weights)[:, None]
    sq = jnp.sum(gx.W**2) + jnp.sum(gh**2)
    if config.bias:
        sq = sq + jnp.sum(gx.b**2)
    return jnp.sqrt(sq)


def _rel_fro(a, b):
    return jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(b), 1e-300)


# -- step size ---------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("static", "metric", "iters"))
def _hessian_norm(x, label_sets, weights, static, lams, metric, iters=30):
    config = merge_config(static, lams)
    f = lambda y: _vars_objective(y, label_sets, weights, config, metric)
    flat, unravel = jax.flatten_util.ravel_pytree(x)
    hvp = lambda v: jax.flatten_util.ravel_pytree(
        jax.jvp(jax.grad(f), (x,), (unravel(v),))[1])[0]
    v0 = jnp.cos(jnp.arange(flat.shape[0], dtype=flat.dtype) * 1.2345) + 0.1

    def body(_, v):
        w = hvp(v / jnp.linalg.norm(v))
        return w

    v = jax.lax.fori_loop(0, iters, body, v0)
    return jnp.linalg.norm(v)


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise InputError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric


def estimate_step_size(params: UFMParams, dist: LabelDistribution, config: UFMConfig,
                       reference: UFMParams | None = None, metric: str = "equal_curvature") -> float:
    """`η = 1/(2L)` with `L` the largest Hessian eigenvalue (power iteration) of the flow's
    objective, taken at the initial point and, when given, at a point of the terminal scale
    (the MSE closed-form factors), whichever is larger.
    """
    metric = _check_metric(metric)
    Y = jnp.asarray(dist.label_sets)
    w = jnp.asarray(dist.weights)
    static, lams = split_config(config)
    L = float(_hessian_norm(to_vars(params, w, metric), Y, w, static, lams, metric))
    if reference is not None:
        ref = jax.tree_util.tree_map(lambda a: jnp.asarray(a, params.W.dtype), reference)
        L = max(L, float(_hessian_norm(to_vars(ref, w, metric), Y, w, static, lams, metric)))
    L = max(L, config.lambda_w, config.lambda_h)
    return 0.5 / L


# -- gradient flow -----------------------------------------------------------------------


@partial(jax.jit, static_argnames=("static", "metric"))
def _flow(x0, label_sets, weights, static, lams, step_size, record_at, tol, ref_gram_w,
          ref_gram_h, metric):
    config = merge_config(static, lams)
    vg = jax.value_and_grad(lambda y: _vars_objective(y, label_sets, weights, config, metric))
    # a reference Gram of size 0 means "none": nothing of size T × T is built without one
    err = lambda A, ref: _rel_fro(A, ref) if ref.size else jnp.asarray(jnp.nan, A.dtype)

    def advance(carry, target):
        x, k = carry

        def cond(c):
            x, k, gnorm = c
            return (k < target) & (gnorm > tol)

        def body(c):
            x, k, _ = c
            _, g = vg(x)
            x = jax.tree_util.tree_map(lambda a, b: a - step_size * b, x, g)
            return x, k + 1, _original_grad_norm(g, weights, config, metric)

        x, k, _ = jax.lax.while_loop(cond, body, (x, k, jnp.asarray(jnp.inf, x.W.dtype)))
        val, g = vg(x)
        params = from_vars(x, weights, metric)
        gw = err(params.W @ params.W.T, ref_gram_w)
        gh = err(params.H @ params.H.T, ref_gram_h)
        rho = certificate(params, label_sets, weights, config)
        rec = (k, val, _original_grad_norm(g, weights, config, metric), gw, gh, rho)
        return (x, k), rec

    (x, k), rec = jax.lax.scan(advance, (x0, jnp.asarray(0)), record_at)
    return x, k, rec


def _log_spaced(num_steps: int, num_records: int) -> np.ndarray:
    pts = np.unique(np.round(np.logspace(0, math.log10(max(num_steps, 1)), num_records)))
    return np.concatenate([[0], pts]).astype(np.int64)


_hessian_norm_batch = jax.jit(
    jax.vmap(_hessian_norm.__wrapped__, in_axes=(0, 0, 0, None, None, None)),
    static_argnums=(3, 5))
_flow_batch = jax.jit(
    jax.vmap(_flow.__wrapped__, in_axes=(0, 0, 0, None, None, 0, None, None, 0, 0, None)),
    static_argnums=(3, 10))


def _monotone(vals) -> np.ndarray:
    """Per member: the recorded objective never rises (beyond rounding)."""
    v = np.asarray(vals)
    return np.all(v[:, 1:] <= v[:, :-1] + 1e-12 * np.maximum(1.0, np.abs(v[:, :-1])), axis=1)


def _all_finite(x) -> np.ndarray:
    return np.asarray(jax.vmap(lambda t: jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(l)) for l in jax.tree_util.tree_leaves(t)])))(x))


def _initial_steps(x0, Y, w, static, lams, config, ref_params, metric, dtype):
    L = np.asarray(_hessian_norm_batch(x0, Y, w, static, lams, metric))
    if ref_params is not None:
        xr = jax.vmap(lambda p, ww: to_vars(p, ww, metric))(
            jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), ref_params), w)
        L = np.maximum(L, np.asarray(_hessian_norm_batch(xr, Y, w, static, lams, metric)))
    return 0.5 / np.maximum(L, max(config.lambda_w, config.lambda_h))


def _given_steps(step_sizes, B):
    steps = np.broadcast_to(np.asarray(step_sizes, dtype=np.float64), (B,)).copy()
    if not np.all((steps > 0) & np.isfinite(steps)):
        raise InputError(f"step sizes must be positive numbers, got {steps.tolist()}")
    return steps


def _refuse_divergence(x, vals, steps):
    """Given step sizes are used as they are: a NaN/inf iterate is the caller's to fix."""
    finite = np.all(np.isfinite(np.asarray(vals)), axis=1) & _all_finite(x)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise SolverDivergedError(
            f"gradient flow diverged (NaN/inf) for batch member(s) {bad.tolist()} with step "
            f"size(s) {[float(f'{v:.3g}') for v in steps[bad]]}; pass a smaller step size")


def _with_stable_steps(run, steps, max_halvings, hessian_norm):
    """Halve the step of every member whose trajectory is not a descent trajectory (the
    recorded objective rises, or `η·L > 1` at its end point, where explicit Euler stops
    being monotone) and rerun it from its initial point."""
    for _ in range(max_halvings + 1):
        x, k, recs = run(steps)
        vals = recs[1]
        finite = np.all(np.isfinite(np.asarray(vals)), axis=1) & _all_finite(x)
        ok = finite & _monotone(np.where(np.isfinite(vals), vals, np.inf))
        L_end = np.asarray(hessian_norm(x))
        ok &= np.where(np.isfinite(L_end), steps * L_end <= 1.0 + 1e-9, False)
        if ok.all():
            return steps, (x, k, recs)
        steps = np.where(ok, steps, steps / 2)
    raise SolverDivergedError(
        f"gradient flow found no stable step size for batch member(s) {np.flatnonzero(~ok).tolist()}"
        f" after {max_halvings} halvings (last {steps[~ok].min():.3g}); pass step_size")


def gradient_flow_batch(params: UFMParams, label_sets, weights, config: UFMConfig,
                        step_sizes=None, *, num_steps: int = 2000, tol: float = 0.0,
                        ref_gram_w=None, ref_gram_h=None, ref_params: UFMParams | None = None,
                        num_records: int = 60, max_halvings: int = 8,
                        metric: str = "equal_curvature"):
    """Explicit-Euler gradient flow vmapped over a leading batch axis of `params`,
    `label_sets [B,T,K]`, `weights [B,T]` (and reference Grams `[B,K,K]`, `[B,T,T]`).

    `metric`: "equal_curvature" (default) or "euclidean" (module docstring).
    Step sizes: given, they are used as they are and a NaN/inf iterate raises
    `SolverDivergedError` naming the members and steps. Left out, each member starts at
    `η = 1/(2L)` with `L` a power-iteration estimate of the largest Hessian eigenvalue at the
    initial point and at `ref_params` (a point of the terminal scale, e.g. the MSE closed
    form); a member whose trajectory is not a descent trajectory (recorded objective rises,
    or `η·L > 1` at its end point, where explicit Euler stops being monotone) has its step
    halved and is rerun from its initial point.

    All members record at the same log-spaced steps; a member whose ‖∇F‖ reaches `tol`
    stops. Returns `(params, FlowTrace, step_sizes)` with a leading batch axis everywhere.
    """
    metric = _check_metric(metric)
    Y, w = jnp.asarray(label_sets), jnp.asarray(weights)
    B = Y.shape[0]
    dtype = params.W.dtype
    none = jnp.zeros((B, 0, 0), dtype)
    rw = none if ref_gram_w is None else jnp.asarray(ref_gram_w, dtype)
    rh = none if ref_gram_h is None else jnp.asarray(ref_gram_h, dtype)
    record_at = jnp.asarray(_log_spaced(num_steps, num_records))
    static, lams = split_config(config)
    x0 = jax.vmap(lambda p, ww: to_vars(p, ww, metric))(params, w)
    run = lambda steps: _flow_batch(x0, Y, w, static, lams, jnp.asarray(steps, dtype), record_at,
                                    jnp.asarray(tol, dtype), rw, rh, metric)
    if step_sizes is None:
        steps = _initial_steps(x0, Y, w, static, lams, config, ref_params, metric, dtype)
        steps, (x, k, recs) = _with_stable_steps(run, steps, max_halvings,
                                                 lambda x: _hessian_norm_batch(x, Y, w, static,
                                                                               lams, metric))
    else:
        steps = _given_steps(step_sizes, B)
        x, k, recs = run(steps)
        _refuse_divergence(x, recs[1], steps)
    ks, vals, gnorms, gw, gh, rho = recs
    ss = jnp.asarray(steps, dtype).reshape(B, 1)
    trace = FlowTrace(ks, ks * ss, vals, gnorms, gw, gh, rho)
    return jax.vmap(lambda xx, ww: from_vars(xx, ww, metric))(x, w), trace, steps


def gradient_flow(params: UFMParams, dist: LabelDistribution, config: UFMConfig, *,
                  num_steps: int = 2000, step_size: float | None = None, tol: float = 0.0,
                  reference=None, num_records: int = 60, metric: str = "equal_curvature"):
    """Fixed-step gradient descent (explicit Euler) on one problem's flow.

    Records objective, ‖∇F‖, ρ and, given a `reference` with `gram_W`, `gram_H` (e.g. a
    `ClosedForm`, whose `params` also set the terminal scale for the step estimate), the
    relative Gram errors at log-spaced steps; stops early once ‖∇F‖ ≤ `tol`. The step
    rule is that of `gradient_flow_batch`. Returns `(params, FlowTrace, step_size)`; raises
    `SolverDivergedError` on a NaN/inf iterate.
    """
    one = lambda a: jnp.asarray(a)[None] if a is not None else None
    ref_params = getattr(reference, "params", None)
    params_b, trace, steps = gradient_flow_batch(
        jax.tree_util.tree_map(one, params), one(dist.label_sets), one(dist.weights), config,
        None if step_size is None else [step_size], num_steps=num_steps, tol=tol,
        ref_gram_w=one(getattr(reference, "gram_W", None)),
        ref_gram_h=one(getattr(reference, "gram_H", None)),
        ref_params=None if ref_params is None else jax.tree_util.tree_map(one, ref_params),
        num_records=num_records, metric=metric)
    ks = np.asarray(trace.step[0])
    keep = np.concatenate([[True], ks[1:] > ks[:-1]])  # drop repeats after an early stop
    trace = FlowTrace(*(jnp.asarray(f[0])[keep] for f in trace))
    return jax.tree_util.tree_map(lambda a: a[0], params_b), trace, float(steps[0])
