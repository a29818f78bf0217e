"""Derivatives of the certified optimum (THEORY §8): `jax.grad`, `jacfwd`, `jacrev`, `vmap`.

`optimum(dist, config)` runs the certified solve (`mlnc_jax.solve`) and returns the
rotation-invariant quantities of the minimiser as JAX arrays that every transformation goes
through, with respect to `dist.weights` and the `λ`'s (`config.lambda_w`, `lambda_h`,
`lambda_b` given as JAX scalars, or the `lambda_*` keyword arguments):

* `objective` F* (its derivative is the envelope formula of §8),
* `gram_W = W Wᵀ` `[K, K]`, `gram_H = H Hᵀ` `[T, T]` (unweighted prototype Gram),
* `logits` `z_s = W h_s + b` `[T, K]` and `bias` `b` `[K]`, both with the directions the loss
  ignores projected out (PAL: centred, `z − mean(z)1`, since `b + c1` is a symmetry),
* `W`, `H`, `b` themselves (see *gauge* below).

**Weights.** `solve` uses `π = w / Σw` (for concrete weights too): derivatives with respect
to `dist.weights` chain through this normalisation, so `Σ_s w_s ∂q/∂w_s = 0`. Zero weights (padding rows) stay out of
the problem. `loss_weights` (PAL) re-weight each set's loss term (`optimum`).

**How.** A `jax.custom_jvp` around the minimiser `x* = (W, U, b)`, `U_s = √π_s h_s` (the Newton
core's variables): the primal is the certified host solve (`jax.pure_callback`; under `vmap`
one `solve_batch` for the whole batch), refused unless certified; the tangent solves
`∇²F · ẋ = −∂_θ∇F · θ̇` with `jax.lax.custom_linear_solve` (so `jacfwd`, and by
transposition `grad`/`jacrev`, work). The solve eliminates the prototype blocks
`λ_H I + Wᵀ∇²ℓ_s W` exactly (the Newton core's structure) and runs conjugate gradients on
the `(W, b)` Schur complement; Hessian products are forward-over-gradient autodiff of
`mlnc_jax.engine.newton.value_grad`.

**Gauge.** `∇²F` is singular along the rotations `(WQ, UQ)` (and `b + c1` for PAL), and both
sides of the system are orthogonal to them. The solve lifts that null space explicitly (CG
on `S + c·P_null`, `P_null` the projector onto `{WA : A skew}` and the ignored bias
directions) and returns the solution whose `(W, b)` part is orthogonal to the symmetry orbit:
`Wᵀ Ẇ` is symmetric (and `1ᵀḃ = 0` for PAL).
Derivatives of `W`, `H`, `b` are those of this *horizontal* motion of the returned
representative; a re-solve at a nearby θ may return a rotated one, so compare them with
finite differences only after Procrustes alignment. Invariant quantities do not depend on
the gauge.

**Rank changes.** Where an eigenvalue of `G Gᵀ` crosses `λ_W λ_H` (a collapse threshold) the
optimum is not differentiable. The forward pass measures the gap `δ` (§8): with `r` the rank
of `W`, `δ = min(1 − e_{r+1}/(λ_W λ_H), σ_r(W)²/λ_H)` (`e_{r+1}` the largest inactive
eigenvalue of `GᵀG`, `σ_r(W)` the smallest non-zero singular value of `W`; both vanish at
the threshold, and for MSE `σ_r(W)²/λ_H = √λ_r/τ − 1` exactly) and raises `RankChangeError` naming
it when `δ < rank_gap_tol`.
"""

from __future__ import annotations

import ctypes
import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..model.budget import check_memory, estimate_solve_bytes
from ..model.errors import InputError, NotCertifiedError, RankChangeError
from ..model.labels import LabelDistribution
from ..model.losses import Loss
from ..model.ufm import UFMConfig
from .batch import solve_batch_with
from .cg import truncated_cg
from .hessian import (
    Point,
    eliminate,
    ignored_bias_basis,
    null_projector,
    orbit_coefficients,
    product,
    rotated_system,
)
from .newton import Problem, value_grad
from .options import SolveOptions, check_start
from .placement import bucket_rows
from .requests import is_traced
from .result import SolveResult, Status

__all__ = ["Optimum", "optimum", "traced_solve", "rank_gap"]


class Optimum(NamedTuple):
    """The certified optimum's invariants (module docstring), JAX float64 arrays.

    `W`, `H`, `b` carry the horizontal gauge's derivatives; `residual`, `certificate`,
    `gap` (the rank gap δ), `steps`, `grad_norm`, `seconds`, `hessian_products` describe the
    forward solve and carry no derivative.
    """

    objective: jax.Array
    gram_W: jax.Array
    gram_H: jax.Array
    logits: jax.Array
    bias: jax.Array
    W: jax.Array
    H: jax.Array
    b: jax.Array
    residual: jax.Array
    certificate: jax.Array
    gap: jax.Array
    steps: jax.Array
    grad_norm: jax.Array
    seconds: jax.Array
    hessian_products: jax.Array


# -- the host side: the certified solve and the rank-gap check ---------------------------------


class _Options(NamedTuple):
    config: UFMConfig     # λ's are placeholders: the traced values arrive separately
    solve: SolveOptions   # validated; its method decided (not "auto")
    seed: int
    rank_gap_tol: float
    init: Any


def rank_gap(W, G_rows, lambda_w, lambda_h, rank_rtol: float = 1e-7):
    """`(δ, r)`: the relative distance to a rank change (module docstring) and the rank of W."""
    W = np.asarray(W, dtype=np.float64)
    tau2 = lambda_w * lambda_h
    sv = np.linalg.svd(W, compute_uv=False)
    scale = max(float(sv[0]) if sv.size else 0.0, (lambda_h / lambda_w) ** 0.25)
    r = int(np.sum(sv > rank_rtol * scale))
    eigs = np.sort(np.linalg.eigvalsh(G_rows.T @ G_rows))[::-1]
    gaps = []
    if r < eigs.size:
        gaps.append(1.0 - eigs[r] / tau2)
    if r > 0:
        gaps.append(sv[r - 1] ** 2 / lambda_h)
    return (min(gaps) if gaps else math.inf), r


_SLOW_GAP = 1e-3  # an unconverged solve this close to a rank change is refused as one


def _check_one(opts: _Options, Y, pi, lam, res, where: str = ""):
    """`(W, U, b, info)` of one solve result (numpy float64), or raise (THEORY §8)."""
    K = Y.shape[1]
    cfg = opts.config._replace(lambda_w=float(lam[0]), lambda_h=float(lam[1]),
                               lambda_b=float(lam[2]))
    W, H, b = (np.asarray(a, dtype=np.float64) for a in (res.W, res.H, res.b))
    U = H * np.sqrt(pi)[:, None]
    with jax.enable_x64(True):
        z = H @ W.T + (b if cfg.bias else 0.0)
        g = np.asarray(cfg.loss_record.derivatives(jnp.asarray(z), jnp.where(
            jnp.asarray(pi > 0)[:, None], jnp.asarray(Y), 1.0))[1])
    G = np.where((pi > 0)[:, None], g * np.sqrt(pi)[:, None], 0.0)
    gap, r = rank_gap(W, G, cfg.lambda_w, cfg.lambda_h) if np.all(np.isfinite(G)) and \
        np.all(np.isfinite(W)) else (math.inf, -1)
    tau2 = cfg.lambda_w * cfg.lambda_h
    if not bool(res.certified):
        if res.status == Status.NOT_CONVERGED and gap < _SLOW_GAP:
            # Newton slows down at a degenerate optimum: the rank change is the reason
            raise RankChangeError(
                f"{where}the solve did not converge ({res.reason}) and W (rank {r}) is near a "
                f"rank change (THEORY §8): the eigenvalue gap to λ_W λ_H = {tau2:.6g} is about "
                f"δ = {gap:.3g}; the optimum is not differentiable there (move λ or the weights "
                "away from the threshold)")
        raise NotCertifiedError(
            f"{where}the solve at these weights/λ is not certified ({res.status}: "
            f"{res.reason}); derivatives of the optimum need a certified global minimiser")
    if gap < opts.rank_gap_tol:
        raise RankChangeError(
            f"{where}the optimum is at a rank change (THEORY §8): W has rank {r} and the "
            f"eigenvalue gap to λ_W λ_H = {tau2:.6g} is δ = {gap:.3g} < rank_gap_tol = "
            f"{opts.rank_gap_tol:g}; the optimum is not differentiable here (move λ or the "
            "weights away from the threshold)")
    if not cfg.bias:
        b = np.zeros(K)
    info = np.array([float(res.residual), float(res.certificate), gap, float(res.steps),
                     float(res.grad_norm), float(res.seconds), float(res.hessian_products)])
    return W, U, b, info


def _release_heap() -> None:
    """Give the solve's freed buffers back to the system (glibc keeps them otherwise): the
    tangent programs compiled next would stack their heap on top (bench/derivatives.py)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _host_solve(opts: _Options, Y, pi, lam):
    """Certified `(W, U, b, info)` for every problem: leading axes (from `vmap`, possibly of
    size 1 where an argument is not batched) broadcast and go to one `solve_batch`."""

    Y, pi, lam = (np.asarray(a, dtype=np.float64) for a in (Y, pi, lam))
    T, K = Y.shape[-2:]
    lead = np.broadcast_shapes(Y.shape[:-2], pi.shape[:-1], lam.shape[:-1])
    Yb = np.broadcast_to(Y, lead + (T, K)).reshape(-1, T, K)
    pib = np.broadcast_to(pi, lead + (T,)).reshape(-1, T)
    lamb = np.broadcast_to(lam, lead + (3,)).reshape(-1, 3)
    B = Yb.shape[0]
    init = opts.init if opts.init is None or isinstance(opts.init, str) else [tuple(opts.init)] * B
    res = solve_batch_with([LabelDistribution(Yb[i], pib[i], K) for i in range(B)], opts.config,
                           opts.solve, seeds=opts.seed, init=init, lambda_w=lamb[:, 0],
                           lambda_h=lamb[:, 1], lambda_b=lamb[:, 2])
    _release_heap()
    outs = [_check_one(opts, Yb[i], pib[i], lamb[i], res.item(i),
                       f"problem {i} of the batch: " if B > 1 else "") for i in range(B)]
    return tuple(np.stack([o[k] for o in outs]).reshape(lead + outs[0][k].shape)
                 for k in range(4))


def _forward(opts: _Options, Y, pi, lam, K, T):
    d = opts.config.dim
    shapes = (jax.ShapeDtypeStruct((K, d), jnp.float64), jax.ShapeDtypeStruct((T, d), jnp.float64),
              jax.ShapeDtypeStruct((K,), jnp.float64), jax.ShapeDtypeStruct((7,), jnp.float64))
    if not is_traced(Y, pi, lam):  # eager: errors reach the caller as they are
        return tuple(jnp.asarray(a) for a in _host_solve(opts, Y, pi, lam))
    return jax.pure_callback(partial(_host_solve, opts), shapes, Y, pi, lam,
                             vmap_method="expand_dims")


# -- the implicit linear system ---------------------------------------------------------------


def _grad_x(x, Y, pi, lam, loss: Loss, bias: bool):
    W, U, b = x
    _, gW, gU, gb, _, _ = value_grad(W, U, b, Problem(Y, pi, lam), loss, bias)
    return gW, gU, gb


def _dot(a, b):
    return sum(jnp.sum(u * v) for u, v in zip(a, b))


_CG_ACCEPT = 1e-7  # relative residual above which the tangent is NaN, not a number


class _Tangent(NamedTuple):
    """The Hessian at the optimum, for the tangent solves (`hessian`, μ = 0)."""
    pt: Point
    prob: Problem
    product: Any   # v ↦ ∇²F v on (W, U, b)


def _tangent_system(x, Y, pi, lam, loss: Loss, bias: bool) -> _Tangent:
    W, U, b = x
    prob = Problem(Y, pi, lam)
    _, _, _, _, G, curv = value_grad(W, U, b, prob, loss, bias)
    pt = Point(W, U, b, G, curv)
    return _Tangent(pt, prob, product(W, U, G, curv, jnp.sqrt(pi), lam, 0.0, loss, bias))


def _accept(op, x, s):
    """`x` if it solves `op(x) = s` to `_CG_ACCEPT` (relative), else NaN: a CG that did not
    converge would give a wrong number."""
    r = tuple(a - c for a, c in zip(op(x), s))
    ok = _dot(r, r) <= (_CG_ACCEPT ** 2) * _dot(s, s)
    return tuple(jnp.where(ok, a, jnp.nan) for a in x)


def _definite(apply, null, lam):
    """`apply + c·P_null` (any `c > 0`: definite, the same solution off the null space) and
    `v ↦ v − P_null v` (the horizontal part)."""
    shift = lam[0] + 1.0
    op = lambda v: tuple(h + shift * n for h, n in zip(apply(v), null(v)))
    horizontal = lambda v: tuple(a - n for a, n in zip(v, null(v)))
    return op, horizontal


def _cg(op, precond, s, max_iter: int, rtol: float):
    """`op(x) = s` by `cg.truncated_cg` from zero (`op` SPD: the null space is shifted)."""
    g = tuple(-a for a in s)
    c = truncated_cg(lambda v: (op(v), ()), precond, g, (), rtol, max_iter, jnp.asarray(False), 0.0)
    return c.p


def _schur_solve(sys: _Tangent, loss: Loss, bias: bool, rhs, max_iter: int, rtol: float = 1e-13):
    """`∇²F v = rhs` on the exact path: prototype blocks eliminated (`hessian.eliminate`),
    CG on the `(W, b)` Schur complement shifted on its null space; `(W, b)` horizontal."""
    pt, lam = sys.pt, sys.prob.lam
    el = eliminate(pt, sys.prob, loss, bias, 0.0)
    bm = 1.0 if bias else 0.0
    # without a bias the b-rows of the Schur product are zeros (`hessian.classifier_rows`)
    op, horizontal = _definite(lambda v: el.schur(*v)[:2],
                               null_projector(pt.W, None, loss, bias, lam), lam)
    rW, rU, rb = rhs
    BW, Bb = el.Bop(el.Dinv(rU))
    s = horizontal((rW - BW, (rb - Bb) * bm))
    xW, xb = _accept(op, horizontal(_cg(op, lambda r: r, s, max_iter, rtol)), s)
    xU = el.Dinv(rU - sys.product((xW, jnp.zeros_like(rU), xb))[1])
    return xW, xU, xb


def _full_solve(sys: _Tangent, loss: Loss, bias: bool, rhs, max_iter: int, rtol: float = 1e-11):
    """`∇²F v = rhs` on the matrix-free path: preconditioned CG on all blocks in the rotated
    frame (`hessian.rotated_system`), shifted on the null space; no `[T, d, d]` tensor and
    nothing of size `d(d−1)/2`. Returned in the gauge of `_schur_solve` (`Wᵀ Ẇ` symmetric).
    `rtol` 1e-11: the diagonal preconditioner needs ~10³ iterations at K = 60, and 1e-11
    already agrees with 1e-13 to 12 digits."""
    pt, lam = sys.pt, sys.prob.lam
    zero = tuple(jnp.zeros_like(a) for a in (pt.W, pt.U, pt.b))
    Q, hvp, (DW, DU, Db), _ = rotated_system(pt, sys.prob, loss, bias, 0.0, grad=zero)
    Wq, Uq = pt.W @ Q, pt.U @ Q
    op, horizontal = _definite(hvp, null_projector(Wq, Uq, loss, bias, lam), lam)
    rW, rU, rb = rhs
    s = horizontal((rW @ Q, rU @ Q, rb if bias else jnp.zeros_like(rb)))
    precond = lambda r: (r[0] / DW, r[1] / DU, r[2] / Db)
    xW, xU, xb = _accept(op, horizontal(_cg(op, precond, s, max_iter, rtol)), s)
    A = orbit_coefficients((Wq,), (xW,))  # a rotation of the solution is a solution
    return (xW - Wq @ A) @ Q.T, (xU - Uq @ A) @ Q.T, xb


# One compiled program each for the tangent's right side and its solve: `jax.grad` called
# outside `jit` would otherwise run them primitive by primitive, compiling hundreds of small
# programs whose heap outgrows the solve's own (THEORY §8, bench/derivatives.py).
@partial(jax.jit, static_argnames=("loss", "bias"))
def _tangent_rhs(x, Y, pi, lam, dY, dpi, dlam, *, loss: Loss, bias: bool):
    """`−∂_θ ∇_x F · θ̇`, linear in the tangents `(dY, dπ, dλ)`."""
    _, dg = jax.jvp(lambda y, p, l: _grad_x(x, y, p, l, loss, bias), (Y, pi, lam),
                    (dY, dpi, dlam))
    # every block must be linear in the tangents for the transpose (without a bias,
    # ∂_θ∇_b F is the constant 0): add an exact linear zero
    zero = 0.0 * (jnp.sum(dY) + jnp.sum(dpi) + jnp.sum(dlam))
    return tuple(zero - a for a in dg)


@partial(jax.jit, static_argnames=("loss", "bias"))
def _tangent_product(x, Y, pi, lam, v, *, loss: Loss, bias: bool):
    return _tangent_system(x, Y, pi, lam, loss, bias).product(v)


@partial(jax.jit, static_argnames=("loss", "bias", "exact", "max_iter"))
def _tangent_solve(x, Y, pi, lam, rhs, *, loss: Loss, bias: bool, exact: bool, max_iter: int):
    """`∇²F(x) v = rhs` on the engine's path (`_schur_solve` or `_full_solve`)."""
    solver = _schur_solve if exact else _full_solve
    return solver(_tangent_system(x, Y, pi, lam, loss, bias), loss, bias, rhs, max_iter)


def _make_xstar(opts: _Options, loss: Loss, bias: bool, K: int, T: int):
    """`(Y, π, λ) ↦ (W, U, b, info)` with the implicit-function JVP of THEORY §8."""
    d = opts.config.dim
    exact = opts.solve.method == "exact"
    max_iter = 10 * (K * d + K + (0 if exact else T * d)) + 200

    @jax.custom_jvp
    def xstar(Y, pi, lam):
        return _forward(opts, Y, pi, lam, K, T)

    @xstar.defjvp
    def xstar_jvp(primals, tangents):
        Y, pi, lam = primals
        dY, dpi, dlam = tangents
        W, U, b, info = xstar(Y, pi, lam)
        x = (W, U, b)
        rhs = _tangent_rhs(x, Y, pi, lam, dY, dpi, dlam, loss=loss, bias=bias)
        matvec = lambda v: _tangent_product(x, Y, pi, lam, v, loss=loss, bias=bias)
        solve = lambda mv, r: _tangent_solve(x, Y, pi, lam, r, loss=loss, bias=bias,
                                             exact=exact, max_iter=max_iter)
        dW, dU, db = jax.lax.custom_linear_solve(matvec, rhs, solve, symmetric=True)
        if not bias:
            db = jnp.zeros_like(db)
        return (W, U, b, info), (dW, dU, db, jnp.zeros_like(info))

    return xstar


# -- the public entry -------------------------------------------------------------------------


def _ignored_projector(loss: Loss, K: int):
    N = ignored_bias_basis(loss, K, bias=True)
    return None if N is None else np.eye(K) - N @ N.T


def _lambdas(config: UFMConfig, lambda_w, lambda_h, lambda_b):
    vals = [config.lambda_w if lambda_w is None else lambda_w,
            config.lambda_h if lambda_h is None else lambda_h,
            config.lambda_b if lambda_b is None else lambda_b]
    return jnp.stack([jnp.asarray(v, dtype=jnp.float64).reshape(()) for v in vals])


def _static_config(config: UFMConfig) -> UFMConfig:
    """`config` validated with placeholder λ's (the traced values are checked on the host)."""
    ph = {n: (getattr(config, n) if not is_traced(getattr(config, n)) else 1.0)
          for n in ("lambda_w", "lambda_h", "lambda_b")}
    try:
        return config._replace(**{n: float(np.asarray(v)) for n, v in ph.items()}).validate()
    except TypeError:
        raise InputError("lambda_w, lambda_h, lambda_b must be scalars") from None


def optimum(dist: LabelDistribution, config: UFMConfig, *, lambda_w=None, lambda_h=None,
            lambda_b=None, seed: int = 0, tol: float = 1e-12, cert_tol: float = 1e-6,
            max_steps: int = 500, init=None, rank_gap_tol: float = 1e-6,
            loss_weights=None, method: str = "auto", max_cg: int = 1024,
            init_scale: float = 0.1, devices=None, progress=False) -> Optimum:
    """The certified optimum's invariants, differentiable in `dist.weights` and the λ's.

    `lambda_*` (default: the config's, which may themselves be JAX scalars) override the
    config. `loss_weights` `[T]` (PAL only, differentiable) re-weights the loss of each
    label set, `Σ_s π_s c_s ℓ(z_s, y_s) + λ_H/2 Σ_s π_s ‖h_s‖² + …` (the regulariser keeps
    the sample weights): PAL is homogeneous in `y`, `c ℓ(z, y) = ℓ(z, c y)`, so this is PAL
    on the label rows `c_s y_s`. `tol` is the solve's block-residual tolerance (tight by
    default: derivatives are as accurate as the optimum); `rank_gap_tol` the smallest rank gap δ accepted (module
    docstring). Needs float64 (`jax.config.update("jax_enable_x64", True)` or inside
    `with jax.enable_x64(True):`). Raises `NotCertifiedError` when the solve is not
    certified and `RankChangeError` at a rank change. `method`, `max_cg`, `init_scale`,
    `devices`, `progress` are `solve`'s; the tangent solves follow the engine path
    (`method`): on the matrix-free path no `[T, d, d]` tensor is built. See the module
    docstring.
    """
    opts = SolveOptions(tol=tol, cert_tol=cert_tol, max_steps=max_steps, max_cg=max_cg,
                        method=method, init_scale=init_scale, devices=devices,
                        progress=progress, warn=False)
    return _optimum(dist, config, opts.validated(), lambda_w, lambda_h, lambda_b, seed, init,
                    rank_gap_tol, loss_weights)


def _optimum(dist, config, solve_opts: SolveOptions, lambda_w, lambda_h, lambda_b, seed, init,
             rank_gap_tol, loss_weights) -> Optimum:
    _check_inputs(dist, config)
    check_start(init)  # here, not first inside the host callback
    cfg = _static_config(config)
    loss, bias = cfg.loss_record, cfg.bias
    lam = _lambdas(config, lambda_w, lambda_h, lambda_b)
    Y, pi, Y_loss = _label_rows(dist, loss, loss_weights)
    T, K = Y.shape
    how = solve_opts.method_for(T, K, cfg.dim)
    # the host solve, then the tangent's vectors (and on the exact path its factors) again
    check_memory(2 * estimate_solve_bytes(K, bucket_rows(T), cfg.dim, 1, how),
                 f"derivatives of the optimum with K = {K}, T = {T}, dim = {cfg.dim} ({how})")
    opts = _Options(cfg, solve_opts._replace(method=how, warn=False), int(seed),
                    float(rank_gap_tol), init)
    W, U, b, info = _make_xstar(opts, loss, bias, K, T)(Y_loss, pi, lam)
    info = jax.lax.stop_gradient(info)
    H = U * jnp.where(pi > 0, 1.0 / jnp.sqrt(jnp.where(pi > 0, pi, 1.0)), 0.0)[:, None]
    f = value_grad(W, U, b, Problem(Y_loss, pi, lam), loss, bias)[0]
    z = H @ W.T + (b if bias else 0.0)
    P = _ignored_projector(loss, K)
    zc, bc = (z, b) if P is None else (z @ P, b @ P)
    zc = jnp.where((pi > 0)[:, None], zc, 0.0)
    return Optimum(f, W @ W.T, H @ H.T, zc, bc, W, H, b, info[0], info[1], info[2], info[3],
                   info[4], info[5], info[6])


def _check_inputs(dist, config) -> None:
    if not isinstance(dist, LabelDistribution):
        raise InputError(f"dist must be a LabelDistribution, got {type(dist).__name__}")
    if not isinstance(config, UFMConfig):
        raise InputError(f"config must be a UFMConfig, got {type(config).__name__}")
    if jnp.asarray(1.0).dtype != jnp.float64:
        raise InputError("derivatives of the optimum need float64: call "
                         "jax.config.update('jax_enable_x64', True) or work inside "
                         "`with jax.enable_x64(True):`")


def _label_rows(dist, loss: Loss, loss_weights):
    """`(Y, π, Y_loss)`: the label rows, `π = w/Σw` as `solve` uses, and the rows the loss
    sees (`c_s y_s` with `loss_weights`, for a loss homogeneous in `y` such as PAL)."""
    Y = jnp.asarray(dist.label_sets, dtype=jnp.float64)
    w = jnp.asarray(dist.weights, dtype=jnp.float64)
    if Y.ndim != 2 or w.shape != Y.shape[:1]:
        raise InputError(f"label_sets [T, K] and weights [T] expected, got {Y.shape}, {w.shape} "
                         "(vmap over a batch of distributions rather than passing one)")
    if loss_weights is None:
        return Y, w / jnp.sum(w), Y
    if not loss.label_homogeneous:
        raise InputError(f"loss_weights need a loss homogeneous in the labels (such as pal), "
                         f"got {loss.name!r}")
    c = jnp.asarray(loss_weights, dtype=jnp.float64)
    if c.shape != (Y.shape[0],):
        raise InputError(f"loss_weights must have shape [{Y.shape[0]}], got {c.shape}")
    return Y, w / jnp.sum(w), Y * c[:, None]


def traced_solve(dist: LabelDistribution, config: UFMConfig, opts: SolveOptions, seed=0, *,
                 init=None):
    """`solve` when `dist.weights` or the config's λ's are JAX tracers: a `SolveResult`
    whose `W`, `H`, `b`, `objective` are JAX arrays carrying the derivatives of `optimum`
    (weights normalised, horizontal gauge for `W`, `H`, `b`; module docstring)."""

    o = _optimum(dist, config, opts, None, None, None, seed, init, 1e-6, None)
    return SolveResult(o.W, o.H, o.b, o.objective, o.grad_norm, o.residual, o.certificate,
                       True, True, Status.CERTIFIED.value, "", o.steps, o.seconds, o.hessian_products,
                       None)


# -- differentiable functionals of the invariants ----------------------------------------------


