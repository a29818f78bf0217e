"""Solvers for the reduced UFM: gradient flow (explicit Euler) and an L-BFGS polish.

Both work in the variables `(W, U, b)` with `U_s = √π_s h_s`. There the regulariser is
`λ_H/2 ‖U‖²` and every prototype has the same curvature, however rare its label set; plain
gradient descent in `U` is the gradient flow of `F` in the metric `diag(1, π_s, 1)`, i.e.
`dh_s/dt = −(Wᵀ g_s + λ_H h_s)`, which has the same critical points as the Euclidean flow.
Reported gradient norms are Euclidean norms of `∇F` in the original `(W, H, b)`; the stopping
test uses the `(W, U, b)` gradient, which bounds it from above (`π_s ≤ 1`).
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .certificate import certificate
from .errors import InputError, SolverDivergedError
from .labels import LabelDistribution
from .ufm import UFMConfig, UFMParams, init_params, objective

__all__ = ["FlowTrace", "SolveResult", "enable_x64", "gradient_flow", "gradient_flow_batch",
           "lbfgs", "solve", "estimate_step_size"]


def enable_x64() -> None:
    """Switch JAX to float64 (done by `solve` and the CLI, never on import)."""
    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


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


class SolveResult(NamedTuple):
    """Result of `solve`: a pytree (leading batch axis when batched).

    `certificate` is `ρ` of THEORY §3; `converged` means `grad_norm ≤ tol`; `steps` counts
    flow steps plus L-BFGS iterations; `flow_trace` is None unless recorded.
    """

    W: jax.Array
    H: jax.Array
    b: jax.Array
    objective: jax.Array
    grad_norm: jax.Array
    certificate: jax.Array
    converged: jax.Array
    steps: jax.Array
    seconds: float
    flow_trace: Optional[FlowTrace] = None


# -- internal parametrisation ----------------------------------------------------------


def _inv_sqrt(weights):
    return jnp.where(weights > 0, 1.0 / jnp.sqrt(jnp.where(weights > 0, weights, 1.0)), 0.0)


def to_internal(params: UFMParams, weights) -> UFMParams:
    return params._replace(H=params.H * jnp.sqrt(weights)[:, None])


def from_internal(x: UFMParams, weights) -> UFMParams:
    return x._replace(H=x.H * _inv_sqrt(weights)[:, None])


def _internal_objective(x, label_sets, weights, config):
    return objective(from_internal(x, weights), label_sets, weights, config)


def split_config(config: UFMConfig):
    """`(static, lams)`: the config with λ's zeroed (a jit static argument, so changing λ
    does not recompile) and the λ's as an array `[λ_W, λ_H, λ_b]`."""
    lams = jnp.asarray([config.lambda_w, config.lambda_h, config.lambda_b])
    return config._replace(lambda_w=0.0, lambda_h=0.0, lambda_b=0.0), lams


def merge_config(static: UFMConfig, lams) -> UFMConfig:
    return static._replace(lambda_w=lams[0], lambda_h=lams[1], lambda_b=lams[2])


def _tree_norm(t):
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(t)))


def _original_grad_norm(gx: UFMParams, weights, config):
    """‖∇F‖ in `(W, H, b)` from the internal gradient: `∂F/∂h_s = √π_s ∂F/∂U_s`."""
    gh = gx.H * jnp.sqrt(weights)[:, None]
    sq = jnp.sum(gx.W**2) + jnp.sum(gh**2)
    if config.bias:
        sq = sq + jnp.sum(gx.b**2)
    return jnp.sqrt(sq)


def _rel_fro(a, b):
    return jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(b), 1e-300)


# -- step size ---------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("static", "iters"))
def _hessian_norm(x, label_sets, weights, static, lams, iters=30):
    config = merge_config(static, lams)
    f = lambda y: _internal_objective(y, label_sets, weights, config)
    flat, unravel = jax.flatten_util.ravel_pytree(x)
    hvp = lambda v: jax.flatten_util.ravel_pytree(
        jax.jvp(jax.grad(f), (x,), (unravel(v),))[1])[0]
    v0 = jnp.cos(jnp.arange(flat.shape[0], dtype=flat.dtype) * 1.2345) + 0.1

    def body(_, v):
        w = hvp(v / jnp.linalg.norm(v))
        return w

    v = jax.lax.fori_loop(0, iters, body, v0)
    return jnp.linalg.norm(v)


def estimate_step_size(params: UFMParams, dist: LabelDistribution, config: UFMConfig,
                       reference: UFMParams | None = None) -> float:
    """`η = 1/(2L)` with `L` the largest Hessian eigenvalue (power iteration) of the flow's
    objective, taken at the initial point and, when given, at a point of the terminal scale
    (the MSE closed-form factors), whichever is larger.
    """
    Y = jnp.asarray(dist.label_sets)
    w = jnp.asarray(dist.weights)
    static, lams = split_config(config)
    L = float(_hessian_norm(to_internal(params, w), Y, w, static, lams))
    if reference is not None:
        ref = jax.tree_util.tree_map(lambda a: jnp.asarray(a, params.W.dtype), reference)
        L = max(L, float(_hessian_norm(to_internal(ref, w), Y, w, static, lams)))
    L = max(L, config.lambda_w, config.lambda_h)
    return 0.5 / L


# -- gradient flow -----------------------------------------------------------------------


@partial(jax.jit, static_argnames=("static",))
def _flow(x0, label_sets, weights, static, lams, step_size, record_at, tol, ref_gram_w, ref_gram_h):
    config = merge_config(static, lams)
    f = lambda y: _internal_objective(y, label_sets, weights, config)
    vg = jax.value_and_grad(f)

    def advance(carry, target):
        x, k = carry

        def cond(c):
            x, k, gnorm = c
            return (k < target) & (gnorm > tol)

        def body(c):
            x, k, _ = c
            _, g = vg(x)
            x = jax.tree_util.tree_map(lambda a, b: a - step_size * b, x, g)
            return x, k + 1, _tree_norm(g)

        x, k, _ = jax.lax.while_loop(cond, body, (x, k, jnp.asarray(jnp.inf, x.W.dtype)))
        val, g = vg(x)
        params = from_internal(x, weights)
        gw = _rel_fro(params.W @ params.W.T, ref_gram_w)
        gh = _rel_fro(params.H @ params.H.T, ref_gram_h)
        rho = certificate(params, label_sets, weights, config)
        rec = (k, val, _original_grad_norm(g, weights, config), gw, gh, rho)
        return (x, k), rec

    (x, k), rec = jax.lax.scan(advance, (x0, jnp.asarray(0)), record_at)
    return x, k, rec


def _log_spaced(num_steps: int, num_records: int) -> np.ndarray:
    pts = np.unique(np.round(np.logspace(0, math.log10(max(num_steps, 1)), num_records)))
    return np.concatenate([[0], pts]).astype(np.int64)


_hessian_norm_batch = jax.jit(jax.vmap(_hessian_norm.__wrapped__, in_axes=(0, 0, 0, None, None)),
                              static_argnums=(3,))
_flow_batch = jax.jit(jax.vmap(_flow.__wrapped__, in_axes=(0, 0, 0, None, None, 0, None, None, 0, 0)),
                      static_argnums=(3,))


def _monotone(vals) -> np.ndarray:
    """Per member: the recorded objective never rises (beyond rounding)."""
    v = np.asarray(vals)
    return np.all(v[:, 1:] <= v[:, :-1] + 1e-12 * np.maximum(1.0, np.abs(v[:, :-1])), axis=1)


def gradient_flow_batch(params: UFMParams, label_sets, weights, config: UFMConfig,
                        step_sizes=None, *, num_steps: int = 2000, tol: float = 0.0,
                        ref_gram_w=None, ref_gram_h=None, ref_params: UFMParams | None = None,
                        num_records: int = 60, max_halvings: int = 8):
    """Explicit-Euler gradient flow vmapped over a leading batch axis of `params`,
    `label_sets [B,T,K]`, `weights [B,T]` (and reference Grams `[B,K,K]`, `[B,T,T]`).

    Step sizes: given, they are used as they are and a NaN/inf iterate raises
    `SolverDivergedError` naming the members and steps. Left out, each member starts at
    `η = 1/(2L)` with `L` a power-iteration estimate of the largest Hessian eigenvalue at the
    initial point and at `ref_params` (a point of the terminal scale, e.g. the MSE closed
    form); a member whose trajectory is not a descent trajectory (recorded objective rises,
    or `η·L > 1` at its end point, where explicit Euler stops being monotone) has its step
    halved and is rerun from its initial point.

    All members record at the same log-spaced steps; a member that reaches `tol` stops.
    Returns `(params, FlowTrace, step_sizes)` with a leading batch axis on every field.
    """
    Y = jnp.asarray(label_sets)
    w = jnp.asarray(weights)
    B, T, K = Y.shape
    dtype = params.W.dtype
    rw = jnp.full((B, K, K), jnp.nan, dtype) if ref_gram_w is None else jnp.asarray(ref_gram_w, dtype)
    rh = jnp.full((B, T, T), jnp.nan, dtype) if ref_gram_h is None else jnp.asarray(ref_gram_h, dtype)
    record_at = jnp.asarray(_log_spaced(num_steps, num_records))
    static, lams = split_config(config)
    x0 = jax.vmap(to_internal)(params, w)
    auto = step_sizes is None
    if auto:
        L = np.asarray(_hessian_norm_batch(x0, Y, w, static, lams))
        if ref_params is not None:
            xr = jax.vmap(to_internal)(jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), ref_params), w)
            L = np.maximum(L, np.asarray(_hessian_norm_batch(xr, Y, w, static, lams)))
        steps = 0.5 / np.maximum(L, max(config.lambda_w, config.lambda_h))
    else:
        steps = np.broadcast_to(np.asarray(step_sizes, dtype=np.float64), (B,)).copy()
        if not np.all((steps > 0) & np.isfinite(steps)):
            raise InputError(f"step sizes must be positive numbers, got {steps.tolist()}")
    for _ in range(max_halvings + 1):
        x, k, (ks, vals, gnorms, gw, gh, rho) = _flow_batch(
            x0, Y, w, static, lams, jnp.asarray(steps, dtype), record_at,
            jnp.asarray(tol, dtype), rw, rh)
        finite = np.all(np.isfinite(np.asarray(vals)), axis=1) & np.asarray(
            jax.vmap(lambda t: jnp.all(jnp.stack([jnp.all(jnp.isfinite(l)) for l in jax.tree_util.tree_leaves(t)])))(x))
        if not auto:
            if not finite.all():
                bad = np.flatnonzero(~finite)
                raise SolverDivergedError(
                    f"gradient flow diverged (NaN/inf) for batch member(s) {bad.tolist()} with step "
                    f"size(s) {[float(f'{v:.3g}') for v in steps[bad]]}; pass a smaller step size")
            break
        ok = finite & _monotone(np.where(np.isfinite(vals), vals, np.inf))
        L_end = np.asarray(_hessian_norm_batch(x, Y, w, static, lams))
        ok &= np.where(np.isfinite(L_end), steps * L_end <= 1.0 + 1e-9, False)
        if ok.all():
            break
        steps = np.where(ok, steps, steps / 2)
    else:
        raise SolverDivergedError(
            f"gradient flow found no stable step size for batch member(s) {np.flatnonzero(~ok).tolist()}"
            f" after {max_halvings} halvings (last {steps[~ok].min():.3g}); pass step_size")
    ss = jnp.asarray(steps, dtype).reshape(B, 1)
    trace = FlowTrace(ks, ks * ss, vals, gnorms, gw, gh, rho)
    return jax.vmap(from_internal)(x, w), trace, steps


def gradient_flow(params: UFMParams, dist: LabelDistribution, config: UFMConfig, *,
                  num_steps: int = 2000, step_size: float | None = None, tol: float = 0.0,
                  reference=None, num_records: int = 60):
    """Fixed-step gradient descent (explicit Euler) on the preconditioned flow.

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
        num_records=num_records)
    ks = np.asarray(trace.step[0])
    keep = np.concatenate([[True], ks[1:] > ks[:-1]])  # drop repeats after an early stop
    trace = FlowTrace(*(jnp.asarray(f[0])[keep] for f in trace))
    return jax.tree_util.tree_map(lambda a: a[0], params_b), trace, float(steps[0])


# -- L-BFGS ---------------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("static", "max_iter", "memory_size"))
def _lbfgs(x0, label_sets, weights, static, lams, tol, max_iter, memory_size=20):
    config = merge_config(static, lams)
    f = lambda y: _internal_objective(y, label_sets, weights, config)
    opt = optax.lbfgs(memory_size=memory_size,
                      linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=40))
    vg = optax.value_and_grad_from_state(f)

    def cond(c):
        x, state, k, gnorm = c
        return (k < max_iter) & (gnorm > tol) & jnp.isfinite(gnorm)

    def body(c):
        x, state, k, _ = c
        value, grad = vg(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        x = optax.apply_updates(x, updates)
        g = jax.grad(f)(x)
        return x, state, k + 1, _tree_norm(g)

    g0 = _tree_norm(jax.grad(f)(x0))
    x, _, k, gnorm = jax.lax.while_loop(cond, body, (x0, opt.init(x0), 0, g0))
    return x, k


def lbfgs(params: UFMParams, dist: LabelDistribution, config: UFMConfig, *,
          tol: float = 1e-10, max_iter: int = 5000):
    """L-BFGS (optax, zoom line search) until ‖∇F‖ ≤ `tol`. Returns `(params, iterations)`."""
    Y = jnp.asarray(dist.label_sets)
    w = jnp.asarray(dist.weights)
    x, k = _lbfgs(to_internal(params, w), Y, w, *split_config(config), jnp.asarray(tol, params.W.dtype),
                  int(max_iter))
    return from_internal(x, w), int(k)


# -- the whole pipeline -------------------------------------------------------------------


@partial(jax.jit, static_argnames=("static",))
def _summary(params, label_sets, weights, static, lams):
    config = merge_config(static, lams)
    x = to_internal(params, weights)
    val, g = jax.value_and_grad(_internal_objective)(x, label_sets, weights, config)
    return val, _original_grad_norm(g, weights, config), certificate(params, label_sets, weights, config)


def check_distribution(dist: LabelDistribution, config: UFMConfig) -> None:
    if config.loss == "pal_normalized" and np.any(
            (np.asarray(dist.label_sets).sum(-1) == 0) & (np.asarray(dist.weights) > 0)):
        raise InputError("pal_normalized is undefined for the empty label set (m = 0)")


def solve(dist: LabelDistribution, config: UFMConfig, seed: int = 0, tol: float = 1e-10, *,
          flow_steps: int = 2000, step_size: float | None = None, max_lbfgs_iter: int = 5000,
          init_scale: float = 0.1, reference=None, init: UFMParams | None = None) -> SolveResult:
    """Solve the reduced UFM (THEORY §2): gradient flow, then L-BFGS polish to ‖∇F‖ ≤ `tol`.

    `flow_steps=0` skips the flow (L-BFGS from the random start; `flow_trace` is None).

    Runs in float64. `reference` (e.g. `closed_form(dist, config_mse)`) is recorded against
    during the flow and, if it has `params`, sets the terminal scale for the step-size
    estimate. Raises `SolverDivergedError` on a NaN/inf iterate.
    """
    enable_x64()
    config = config.validate()
    check_distribution(dist, config)
    if not (tol > 0):
        raise InputError(f"tol must be > 0, got {tol}")
    t0 = time.perf_counter()
    K, T = dist.num_classes, dist.num_sets
    if init is None:
        init = init_params(jax.random.PRNGKey(seed), K, T, config, init_scale, jnp.float64)
    if flow_steps > 0:
        params, trace, _ = gradient_flow(init, dist, config, num_steps=flow_steps,
                                         step_size=step_size, tol=tol, reference=reference)
        flow_done = int(trace.step[-1])
    else:  # straight to L-BFGS: one compiled program less
        params, trace, flow_done = init, None, 0
    params, iters = lbfgs(params, dist, config, tol=tol, max_iter=max_lbfgs_iter)
    val, gnorm, rho = _summary(params, jnp.asarray(dist.label_sets), jnp.asarray(dist.weights),
                               *split_config(config))
    if not (np.isfinite(float(val)) and np.isfinite(float(gnorm))):
        raise SolverDivergedError("L-BFGS produced a NaN/inf iterate; try a smaller init_scale")
    params = jax.block_until_ready(params)
    steps = flow_done + iters
    return SolveResult(params.W, params.H, params.b, val, gnorm, rho, gnorm <= tol,
                       jnp.asarray(steps), time.perf_counter() - t0, trace)
