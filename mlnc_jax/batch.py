"""Batched UFM solves: many problems, one compiled program (THEORY §2-§3).

`solve_batch` solves a batch of reduced UFM problems — different label distributions,
different `λ_W`/`λ_H`/`λ_b`, different seeds — with one jit-compiled, `vmap`-ed solver:

* Distributions with different supports are padded to a common `T` with zero-weight rows
  and a mask; padded prototypes get no gradient and stay exactly 0. All distributions of a
  batch must share `num_classes` (`K`) and the static options of `config` (loss, `dim`,
  bias); the regularisation strengths are traced per-problem arrays, so one compiled
  program serves any grid of `λ` values (`batch_grid` expands one).
* The solver is a damped Newton (Levenberg-Marquardt) method on the internal variables
  `(W, U, b)`, `U_s = √π_s h_s`, of `mlnc_jax.solvers`: each step solves
  `(∇²F + μI) p = −∇F` with `μ = θ‖∇F‖`. The prototype blocks of the Hessian,
  `∂²F/∂U_s² = λ_H I + Wᵀ ∇²ℓ_s W`, are positive definite for every convex loss and are
  eliminated exactly (a QR of `Wᵀ` reduces each to an `r × r` Cholesky, `r = min(d, K)`);
  conjugate gradients then solve the small `(W, b)` Schur-complement system, which is well
  conditioned (its null space is the rotation symmetry), so a step needs a handful of
  Hessian products. `θ` follows the ratio of actual to predicted decrease; negative
  curvature met by CG (near saddles such as `W = 0`) raises it. Every problem is run until
  `‖∇F‖ ≤ tol` (Euclidean norm in the internal variables, an upper bound of the reported
  norm in `(W, H, b)`); at the end the certificate `ρ` of THEORY §3 is computed.
* Convergence under `vmap`: a chunked host loop calls a compiled `advance` of a few
  Newton steps in which converged problems are frozen, shows a progress bar (converged /
  total and the worst `‖∇F‖`; `progress=False` turns it off, it is off when stderr is no
  TTY) and stops when every problem has converged or the step budget is spent. Problems
  that did not converge are reported by index in a `ConvergenceWarning` and in the
  result's `converged` flags.
* Repeated calls with the same shapes (batch size, padded `T`, `K`, `d`) and the same
  static options reuse the compiled program: no recompilation.

Results equal `mlnc_jax.solve` run one problem at a time, to solver tolerance, in every
rotation-invariant quantity (`W Wᵀ`, `H Hᵀ`, logits, objective): both start from
`init_params(PRNGKey(seed), K, T, config, init_scale)` (the padded rows are appended after
drawing the unpadded init) and both end at a certified global minimiser.

Devices
-------
With several devices (`jax.devices()`, e.g. several GPUs or TPU cores), the batch axis is
sharded over all of them with `jax.sharding` (a 1-d `Mesh` named ``"batch"`` and
`NamedSharding(mesh, P("batch"))`); the batch is padded to a multiple of the device count
with copies of its last problem (dropped from the result). Every device then runs the
same program on its slice; only the per-problem convergence flags and gradient norms
travel to the host between chunks. Pass `devices=[...]` to choose devices, or
`devices=jax.devices()[:1]` to stay on one.

A batch larger than `batch_size` runs as consecutive groups of that size through the same
compiled program. The default is 8192 problems per device on accelerators and 16 per
device on CPUs: XLA:CPU runs each device's program on one core, and a wide vmapped group
only adds lockstep waste there (a Newton step costs as much as its slowest member).
On a CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=N` (set before JAX is
imported) splits the host into `N` devices, which lets `N` shards run on `N` cores.

Multi-host (several machines, e.g. a TPU pod slice or a multi-node GPU cluster): call
`jax.distributed.initialize()` in every process before anything else, then call
`solve_batch` with the same arguments in every process. `jax.devices()` then lists the
devices of all hosts; the inputs are placed with `jax.make_array_from_callback` (each
process fills its own shards from the identical host data) and the results are gathered
to every process with `jax.experimental.multihost_utils.process_allgather`.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from functools import partial
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .errors import InputError
from .labels import LabelDistribution
from .solvers import FlowTrace, SolveResult, enable_x64
from .ufm import UFMConfig, UFMParams, init_params

__all__ = ["BatchSolveResult", "BatchGrid", "ConvergenceWarning", "batch_grid",
           "solve_batch"]


class ConvergenceWarning(RuntimeWarning):
    """Some problems of a batch did not reach `‖∇F‖ ≤ tol`; the message lists them."""


class BatchSolveResult(NamedTuple):
    """Result of `solve_batch`: the fields of `SolveResult` with a leading batch axis.

    `W [B, K, d]`, `H [B, T, d]` (each problem's prototype rows in its distribution's order,
    zero padding rows after them), `b [B, K]`, `objective`, `grad_norm` (‖∇F‖ in
    `(W, H, b)`), `certificate` (`ρ` of THEORY §3), `converged` (`grad_norm ≤ tol`, bool),
    `steps` (Newton steps) are `[B]` arrays; `seconds` is the wall time of the whole call;
    `mask [B, T]` marks the real prototype rows. `item(i)` returns problem `i` as a
    `SolveResult` with the padding removed.
    """

    W: Any
    H: Any
    b: Any
    objective: Any
    grad_norm: Any
    certificate: Any
    converged: Any
    steps: Any
    seconds: float
    flow_trace: Optional[FlowTrace] = None
    mask: Any = None

    @property
    def batch_size(self) -> int:
        return int(np.shape(self.objective)[0])

    def item(self, i: int) -> SolveResult:
        """Problem `i` as a single-problem `SolveResult` (padding rows removed)."""
        T = int(np.sum(np.asarray(self.mask[i])))
        return SolveResult(self.W[i], self.H[i][:T], self.b[i], self.objective[i],
                           self.grad_norm[i], self.certificate[i], self.converged[i],
                           self.steps[i], self.seconds, None)


class BatchGrid(NamedTuple):
    """A flattened grid for `solve_batch` (see `batch_grid`).

    `distributions`, `seeds`, `lambda_w`, `lambda_h`: one entry per problem;
    `index[i] = (distribution, lambda_w, lambda_h, seed)` indices of problem `i` in the
    grid axes; `shape` the grid's shape in that order.
    """

    distributions: list
    seeds: np.ndarray
    lambda_w: np.ndarray
    lambda_h: np.ndarray
    index: np.ndarray
    shape: tuple

    def kwargs(self) -> dict:
        """Keyword arguments for `solve_batch(**grid.kwargs(), config=...)`."""
        return dict(distributions=self.distributions, seeds=self.seeds,
                    lambda_w=self.lambda_w, lambda_h=self.lambda_h)


def batch_grid(distributions, lambda_w, lambda_h, seeds=(0,)) -> BatchGrid:
    """Cartesian product distributions × λ_W × λ_H × seeds, flattened in C order."""
    dists = [distributions] if isinstance(distributions, LabelDistribution) else list(distributions)
    lw = np.atleast_1d(np.asarray(lambda_w, dtype=np.float64))
    lh = np.atleast_1d(np.asarray(lambda_h, dtype=np.float64))
    sd = np.atleast_1d(np.asarray(seeds)).astype(np.int64)
    if lw.ndim != 1 or lh.ndim != 1 or sd.ndim != 1:
        raise InputError("lambda_w, lambda_h and seeds must be scalars or 1-d lists")
    shape = (len(dists), lw.size, lh.size, sd.size)
    if min(shape) == 0:
        raise InputError(f"empty grid (sizes {shape})")
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 4)
    return BatchGrid([dists[i] for i in idx[:, 0]], sd[idx[:, 3]], lw[idx[:, 1]], lh[idx[:, 2]],
                     idx, shape)


# =========================================================================================
# The per-problem solver (vmapped). Variables: W [K, d], U [T, d] (U_s = √π_s h_s), b [K].
# =========================================================================================


class _Prob(NamedTuple):
    Y: jax.Array      # [T, K] label sets (padding rows: zeros)
    w: jax.Array      # [T] weights π_s (padding rows: 0)
    lam: jax.Array    # [3] λ_W, λ_H, λ_b


class _State(NamedTuple):
    W: jax.Array
    U: jax.Array
    b: jax.Array
    f: jax.Array        # objective at (W, U, b)
    gW: jax.Array       # internal gradient
    gU: jax.Array
    gb: jax.Array
    gnorm: jax.Array    # ‖∇F‖ in internal variables (the stopping test)
    G: jax.Array        # [T, K] √π_s ∇ℓ(z_s) at (W, U, b)
    a: jax.Array        # [T, K] loss curvature ∇²ℓ(z_s) = diag(a_s) − q_s q_sᵀ ...
    q: jax.Array        # [T, K] (or [T, 0] when the curvature is diagonal)
    theta: jax.Array    # damping μ = θ‖∇F‖
    done: jax.Array     # converged
    stalled: jax.Array  # the damping blew up without convergence
    steps: jax.Array    # Newton steps taken
    hvps: jax.Array     # Schur-complement products taken


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


_RANK_ONE = {"pal": True, "pal_normalized": True, "bce": False, "mse": False}


def _loss_parts(loss_name, z, Y, mask):
    """Per-row loss, gradient and curvature `∇²ℓ(z_s) = diag(a_s) − q_s q_sᵀ` (THEORY §2).

    pal: `a = m p`, `q = √m p`; pal_normalized: `a = q = p`; bce: `a = σ(1−σ)`; mse: `a = 1`
    (`p` = softmax(z), `m = 1ᵀy`). Padding rows are zeroed.
    """
    mk = mask[:, None]
    if loss_name in ("pal", "pal_normalized"):
        Ys = jnp.where(mk, Y, 1.0)  # empty padding sets: keep pal_normalized finite
        m = jnp.sum(Ys, -1)
        lse = jax.nn.logsumexp(z, axis=-1)
        p = jnp.exp(z - lse[:, None])
        yz = jnp.sum(Ys * z, -1)
        if loss_name == "pal":
            l, g, a, q = m * lse - yz, m[:, None] * p - Ys, m[:, None] * p, jnp.sqrt(m)[:, None] * p
        else:
            l, g, a, q = lse - yz / m, p - Ys / m[:, None], p, p
    elif loss_name == "bce":
        sg = jax.nn.sigmoid(z)
        l = jnp.sum(jax.nn.softplus(z) - Y * z, -1)
        g, a, q = sg - Y, sg * (1.0 - sg), jnp.zeros(z.shape[:1] + (0,), z.dtype)
    elif loss_name == "mse":
        l = 0.5 * jnp.sum((z - Y) ** 2, -1)
        g, a, q = z - Y, jnp.ones_like(z), jnp.zeros(z.shape[:1] + (0,), z.dtype)
    else:  # pragma: no cover - every loss of mlnc_jax.losses is handled above
        raise InputError(f"solve_batch has no curvature formula for loss {loss_name!r}")
    zero = lambda x: jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x, 0.0)
    return zero(l), zero(g), zero(a), zero(q)


def _value_grad(W, U, b, prob: _Prob, loss_name: str, bias: bool):
    """Objective, internal gradient, `G = [√π_s g_s]` and the curvature factors `a, q`."""
    Y, w, lam = prob
    lw, lh, lb = lam[0], lam[1], lam[2]
    mask = w > 0
    sw = jnp.sqrt(w)
    isq = jnp.where(mask, 1.0 / jnp.where(mask, sw, 1.0), 0.0)
    z = (U * isq[:, None]) @ W.T
    if bias:
        z = z + b
    l, g, a, q = _loss_parts(loss_name, z, Y, mask)
    G = g * sw[:, None]
    f = jnp.sum(w * l) + 0.5 * lw * jnp.sum(W * W) + 0.5 * lh * jnp.sum(U * U)
    gW = G.T @ U + lw * W
    gU = G @ W + lh * U
    if bias:
        f = f + 0.5 * lb * jnp.sum(b * b)
        gb = sw @ G + lb * b
    else:
        gb = jnp.zeros_like(b)
    return f, gW, gU, gb, G, a, q


def _sqnorm(*arrs):
    return sum(jnp.sum(x * x) for x in arrs)


def _newton_step(st: _State, prob: _Prob, tol, loss_name: str, bias: bool, max_cg: int):
    """One damped Newton (Levenberg-Marquardt) step, frozen once the problem is done.

    Solves `(∇²F + μI) p = −∇F`, `μ = θ‖∇F‖`, by eliminating the prototype blocks exactly
    and running conjugate gradients on the `(W, b)` Schur complement; `θ` adapts to the
    ratio of actual to predicted decrease, and negative curvature met by CG raises it.
    """
    Y, w, lam = prob
    lw, lh, lb = lam[0], lam[1], lam[2]
    W, U, b, G, a, q = st.W, st.U, st.b, st.G, st.a, st.q
    dtype = W.dtype
    sw = jnp.sqrt(w)
    rank_one = q.shape[-1] > 0
    mu = st.theta * st.gnorm
    bmask = 1.0 if bias else 0.0

    def Aop(v):  # v [T, K] -> ∇²ℓ(z_s) v_s
        out = a * v
        return out - q * jnp.sum(q * v, -1, keepdims=True) if rank_one else out

    # -- exact inverse of the damped prototype blocks D_s = (λ_H + μ) I + Wᵀ A_s W -------
    # Wᵀ = V R (QR); D_s⁻¹ = (I − VVᵀ)/c + V E_s⁻¹ Vᵀ with E_s = c I + R A_s Rᵀ (r × r).
    V, R = jnp.linalg.qr(W.T)
    r = R.shape[0]
    c = lh + mu
    RR = (R[:, None, :] * R[None, :, :]).reshape(r * r, -1)  # [r², K]
    E = (a @ RR.T).reshape(-1, r, r) + c * jnp.eye(r, dtype=dtype)
    if rank_one:
        Rq = q @ R.T
        E = E - Rq[:, :, None] * Rq[:, None, :]
    L = _chol(E)

    def Dinv(y):  # y [T, d]
        yV = y @ V
        return y / c + (_chol_solve(L, yV) - yV / c) @ V.T

    def Bt(dW, db):  # U-block of the Hessian applied to (dW, 0, db): [T, d]
        dy0 = U @ dW.T
        if bias:
            dy0 = dy0 + sw[:, None] * db[None, :]
        return Aop(dy0) @ W + G @ dW, dy0

    def Bop(t):  # (W, b)-block of the Hessian applied to (0, t, 0)
        dG = Aop(t @ W.T)
        return dG.T @ U + G.T @ t, bmask * (sw @ dG)

    def Schur(dW, db):  # S_μ v = (H_AA + μ) v − B D_μ⁻¹ Bᵀ v, and u = −D_μ⁻¹ Bᵀ v
        bt, dy0 = Bt(dW, db)
        u = -Dinv(bt)
        dG = Aop(dy0 + u @ W.T)
        return (dG.T @ U + G.T @ u + (lw + mu) * dW,
                bmask * (sw @ dG + (lb + mu) * db), u)

    t = Dinv(st.gU)
    BW, Bb = Bop(t)
    rW0 = st.gW - BW  # reduced gradient ĝ = g_A − B D_μ⁻¹ g_U
    rb0 = (st.gb - Bb) * bmask
    rr0 = _sqnorm(rW0, rb0)
    eta = jnp.minimum(0.5, jnp.sqrt(st.gnorm))  # forcing term: superlinear local convergence
    cg_tol = jnp.maximum(eta * jnp.sqrt(rr0), 0.05 * tol)
    zero_t = jnp.zeros((), dtype)

    class CG(NamedTuple):
        pW: Any
        pb: Any
        pU: Any     # −D_μ⁻¹Bᵀp_A, accumulated from the products
        rW: Any
        rb: Any
        dW: Any
        db: Any
        rr: Any
        m: Any      # reduced model value ĝ·p + ½ pᵀ S_μ p
        k: Any
        neg: Any    # met negative curvature
        kneg: Any   # its Rayleigh quotient
        stop: Any

    def body(cg: CG):
        HW, Hb, u = Schur(cg.dW, cg.db)
        dHd = jnp.sum(cg.dW * HW) + jnp.sum(cg.db * Hb)
        neg = dHd <= 0
        # negative curvature: keep the CG iterate, or on the first iteration take the
        # damped gradient step −ĝ/μ (the model still predicts its decrease exactly)
        alpha = jnp.where(neg, jnp.where(cg.k == 0, 1.0 / mu, 0.0),
                          cg.rr / jnp.where(neg, 1.0, dHd))
        rd = jnp.sum(cg.rW * cg.dW) + jnp.sum(cg.rb * cg.db)
        rW, rb = cg.rW + alpha * HW, cg.rb + alpha * Hb
        rr = _sqnorm(rW, rb)
        k = cg.k + 1
        beta = rr / jnp.maximum(cg.rr, 1e-300)
        stop = neg | (rr <= cg_tol**2) | (k >= max_cg)
        return CG(cg.pW + alpha * cg.dW, cg.pb + alpha * cg.db, cg.pU + alpha * u, rW, rb,
                  -rW + beta * cg.dW, -rb + beta * cg.db, rr,
                  cg.m + alpha * rd + 0.5 * alpha**2 * dHd, k, neg,
                  jnp.where(neg, dHd / jnp.maximum(_sqnorm(cg.dW, cg.db), 1e-300), 0.0), stop)

    c0 = CG(jnp.zeros_like(W), jnp.zeros_like(b), jnp.zeros_like(U), rW0, rb0, -rW0, -rb0, rr0,
            zero_t,
            jnp.asarray(0), jnp.asarray(False), zero_t, st.done | (rr0 == 0))
    cg = jax.lax.while_loop(lambda c: ~c.stop, body, c0)

    # the full step: p_U = −D_μ⁻¹(g_U + Bᵀp_A); the model value of F (without μ)
    pW, pb = cg.pW, cg.pb
    pU = cg.pU - t
    pred = -(cg.m - 0.5 * jnp.sum(st.gU * t) - 0.5 * mu * _sqnorm(pW, pb, pU))
    usable = pred > 0

    W1, U1, b1 = W + pW, U + pU, b + pb * bmask
    f1, gW1, gU1, gb1, G1, a1, q1 = _value_grad(W1, U1, b1, prob, loss_name, bias)
    g1 = jnp.sqrt(_sqnorm(gW1, gU1, gb1))
    ared = st.f - f1
    small = 1e-12 * jnp.maximum(jnp.abs(st.f), 1e-30)
    tiny = pred <= small
    rho = jnp.where(tiny, jnp.where((g1 < st.gnorm) & (ared >= -small), 1.0, -1.0),
                    ared / jnp.where(pred > 0, pred, 1.0))
    rho = jnp.where(jnp.isfinite(f1) & jnp.isfinite(g1) & usable, rho, -jnp.inf)
    acc = (rho > 1e-4) & ~st.done
    theta = jnp.where(rho > 0.75, st.theta / 3.0, jnp.where(rho > 0.25, st.theta, 2.0 * st.theta))
    theta = jnp.where(acc, theta, 4.0 * st.theta)
    # negative curvature: make μ exceed it next time
    theta = jnp.where(cg.neg, jnp.maximum(theta, (mu + 2.0 * jnp.abs(cg.kneg)) / st.gnorm), theta)
    theta = jnp.clip(theta, 1e-6, 1e12)
    sel = lambda new, old: jnp.where(acc, new, old)
    gnorm = sel(g1, st.gnorm)
    return _State(sel(W1, W), sel(U1, U), sel(b1, b), sel(f1, st.f), sel(gW1, st.gW),
                  sel(gU1, st.gU), sel(gb1, st.gb), gnorm, sel(G1, G), sel(a1, a), sel(q1, q),
                  jnp.where(st.done, st.theta, theta), st.done | (gnorm <= tol),
                  st.stalled | (~st.done & (theta >= 1e12)),
                  st.steps + (~st.done).astype(st.steps.dtype),
                  st.hvps + jnp.where(st.done, 0, cg.k).astype(st.hvps.dtype))


def _init_state(W, U, b, prob: _Prob, tol, theta0, loss_name, bias):
    f, gW, gU, gb, G, a, q = _value_grad(W, U, b, prob, loss_name, bias)
    gnorm = jnp.sqrt(_sqnorm(gW, gU, gb))
    return _State(W, U, b, f, gW, gU, gb, gnorm, G, a, q, jnp.asarray(theta0, f.dtype),
                  gnorm <= tol, jnp.asarray(False), jnp.asarray(0, jnp.int32),
                  jnp.asarray(0, jnp.int32))


_TRACE_COUNT = {"init": 0, "advance": 0, "summary": 0}  # Python side effects: one per trace


@partial(jax.jit, static_argnames=("loss_name", "bias"))
def _init_batch(W, U, b, prob, tol, theta0, loss_name, bias):
    _TRACE_COUNT["init"] += 1
    return jax.vmap(lambda W, U, b, prob: _init_state(W, U, b, prob, tol, theta0, loss_name, bias))(
        W, U, b, prob)


@partial(jax.jit, static_argnames=("loss_name", "bias", "max_cg"), donate_argnums=(0,))
def _advance(state, prob, tol, loss_name, bias, max_cg, num_steps):
    """Up to `num_steps` Newton steps for every problem (converged problems stay frozen);
    returns early once every problem has converged or stalled."""
    _TRACE_COUNT["advance"] += 1
    step = jax.vmap(lambda st, pr: _newton_step(st, pr, tol, loss_name, bias, max_cg))

    def cond(c):
        i, st = c
        return (i < num_steps) & ~jnp.all(st.done | st.stalled)

    def body(c):
        i, st = c
        return i + 1, step(st, prob)

    return jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), state))[1]


@partial(jax.jit, static_argnames=("loss_name", "bias"))
def _summary(W, U, b, prob, loss_name, bias):
    """Objective, ‖∇F‖ in (W, H, b), certificate ρ and H, per problem."""
    _TRACE_COUNT["summary"] += 1

    def one(W, U, b, pr):
        f, gW, gU, gb, G, _, _ = _value_grad(W, U, b, pr, loss_name, bias)
        mask = pr.w > 0
        sw = jnp.sqrt(pr.w)
        isq = jnp.where(mask, 1.0 / jnp.where(mask, sw, 1.0), 0.0)
        H = U * isq[:, None]
        gH = gU * sw[:, None]  # ∂F/∂h_s = √π_s ∂F/∂U_s
        gn = jnp.sqrt(_sqnorm(gW, gH) + (_sqnorm(gb) if bias else 0.0))
        # ρ = ‖G‖_op / √(λ_W λ_H) with G = [√π_s g_s]_s (THEORY §3), via the K×K Gram
        lam_max = jnp.linalg.eigvalsh(G.T @ G)[-1]
        rho = jnp.sqrt(jnp.maximum(lam_max, 0.0)) / jnp.sqrt(pr.lam[0] * pr.lam[1])
        return f, gn, rho, H

    return jax.vmap(one)(W, U, b, prob)


_INIT_BLOCK = 64


def _random_init(seeds, scale, num_classes, num_sets, dim):
    """`init_params(PRNGKey(seed), K, T, ·, scale)` for every seed, bitwise the same.

    Run eagerly (op by op, like `solve` does): a jit-compiled copy fuses the sampler and
    can differ in the last bit.
    """
    cfg = UFMConfig("mse", dim, 1.0, 1.0)
    return jax.vmap(lambda s: init_params(jax.random.PRNGKey(s), num_classes, num_sets, cfg,
                                          scale, jnp.float64))(seeds)


# =========================================================================================
# Host side: inputs, devices, the chunked loop, results.
# =========================================================================================


def _as_list(x, name):
    if isinstance(x, LabelDistribution):
        return [x]
    try:
        out = list(x)
    except TypeError:
        raise InputError(f"{name} must be a LabelDistribution or a list of them") from None
    if not out:
        raise InputError(f"{name} is empty")
    for i, d in enumerate(out):
        if not isinstance(d, LabelDistribution):
            raise InputError(f"{name}[{i}] is not a LabelDistribution")
    return out


def _per_problem(x, name, default, dtype):
    v = np.atleast_1d(np.asarray(default if x is None else x, dtype=dtype))
    if v.ndim != 1:
        raise InputError(f"{name} must be a scalar or a 1-d list, got shape {v.shape}")
    return v


def _broadcast(columns: dict) -> int:
    sizes = {k: len(v) for k, v in columns.items() if len(v) != 1}
    B = max(sizes.values(), default=1)
    bad = {k: n for k, n in sizes.items() if n != B}
    if bad:
        desc = ", ".join(f"{k}: {n}" for k, n in {**sizes}.items())
        raise InputError(f"batch sizes disagree ({desc}); give length 1 or one common length")
    return B


def _default_group(backend: str, n_dev: int) -> int:
    # XLA:CPU runs each device on one core and gains nothing from wide batches (the
    # slowest member sets the pace); accelerators want the whole batch at once.
    return (16 if backend == "cpu" else 8192) * n_dev


class _Placer:
    """Puts host arrays on the devices (sharded over the batch axis) and fetches them."""

    def __init__(self, devices):
        self.devices = list(devices)
        self.n = len(self.devices)
        self.multi_process = jax.process_count() > 1
        if self.n > 1:
            from jax.sharding import Mesh, NamedSharding, PartitionSpec

            self.mesh = Mesh(np.asarray(self.devices), ("batch",))
            self.sharding = NamedSharding(self.mesh, PartitionSpec("batch"))

    def put(self, tree):
        def one(x):
            x = np.asarray(x)
            if self.n == 1:
                return jax.device_put(x, self.devices[0])
            if self.multi_process:
                return jax.make_array_from_callback(x.shape, self.sharding, lambda idx: x[idx])
            return jax.device_put(x, self.sharding)

        return jax.tree_util.tree_map(one, tree)

    def get(self, tree):
        if self.multi_process:
            from jax.experimental import multihost_utils

            return jax.tree_util.tree_map(
                np.asarray, multihost_utils.process_allgather(tree, tiled=True))
        return jax.tree_util.tree_map(np.asarray, tree)


def _initial_params(dists, T_pad, seeds, config, init, init_scale, lam):
    """`W [B, K, d]`, `H [B, T_pad, d]`, `b [B, K]` (numpy float64)."""
    B, K, d = len(dists), dists[0].num_classes, config.dim
    if isinstance(init, UFMParams) or (isinstance(init, tuple) and len(init) == 3):
        W0, H0, b0 = (np.asarray(a, dtype=np.float64) for a in init)
        if W0.shape != (B, K, d) or b0.shape != (B, K) or H0.ndim != 3 or H0.shape[0] != B \
                or H0.shape[2] != d or H0.shape[1] not in (T_pad,):
            raise InputError(
                f"init must hold W [{B}, {K}, {d}], H [{B}, {T_pad}, {d}], b [{B}, {K}]")
        return W0.copy(), H0.copy(), b0.copy()
    if init not in (None, "random", "mse"):
        raise InputError(f"init must be None, 'random', 'mse' or UFMParams, got {init!r}")
    W = np.zeros((B, K, d))
    H = np.zeros((B, T_pad, d))
    b = np.zeros((B, K))
    Ts = np.array([dd.num_sets for dd in dists])
    blk = _INIT_BLOCK  # fixed-size blocks: one compiled init per (T, d), whatever B is
    for T in np.unique(Ts):
        idx = np.flatnonzero(Ts == T)
        for j in range(0, idx.size, blk):
            part = idx[j:j + blk]
            sd = np.concatenate([seeds[part], np.zeros(blk - part.size, np.int64)])
            p = _random_init(jnp.asarray(sd), float(init_scale),
                             num_classes=K, num_sets=int(T), dim=d)
            W[part] = np.asarray(p.W)[:part.size]
            H[part, :T] = np.asarray(p.H)[:part.size]
    if init == "mse":
        from .certificate import optimal_collapse_bias
        from .closed_forms import mse_closed_form

        for i, dist in enumerate(dists):
            cf = mse_closed_form(dist, config._replace(
                loss="mse", lambda_w=float(lam[i, 0]), lambda_h=float(lam[i, 1]),
                lambda_b=0.0))
            W[i] += cf.params.W
            H[i, :dist.num_sets] += cf.params.H
            if config.bias and config.loss != "mse":
                with np.errstate(all="ignore"):
                    b0 = np.asarray(optimal_collapse_bias(dist, config._replace(lambda_b=0.0)))
                b[i] = np.where(np.isfinite(b0), np.clip(b0, -30, 30), 0.0)
            elif config.bias:
                b[i] = cf.b
    return W, H, b


def _warn_unconverged(converged, stalled, tol):
    bad = np.flatnonzero(~converged)
    if bad.size == 0:
        return
    shown = ", ".join(str(i) for i in bad[:20]) + (", ..." if bad.size > 20 else "")
    why = " (damping blew up on some: NaN/inf or tol below round-off?)" if np.any(stalled[bad]) else ""
    warnings.warn(
        f"solve_batch: {bad.size} of {converged.size} problems did not reach ‖∇F‖ ≤ {tol:g}"
        f"{why}; indices: [{shown}] (see result.converged, result.grad_norm)",
        ConvergenceWarning, stacklevel=3)


def solve_batch(distributions, config: UFMConfig, seeds=0, tol: float = 1e-10, *,
                lambda_w=None, lambda_h=None, lambda_b=None, init=None,
                init_scale: float = 0.1, max_steps: int = 300, chunk_steps: int = 8,
                max_cg: int = 8, batch_size: int | None = None,
                devices: Sequence | None = None, progress: bool | None = None,
                theta0: float = 1.0) -> BatchSolveResult:
    """Solve many reduced UFM problems (THEORY §2) with one compiled, vmapped program.

    Args:
      distributions: a `LabelDistribution` or a list of `B` of them (same `num_classes`).
      config: static options (`loss`, `dim`, `bias`); its `lambda_*` are the defaults of
        the per-problem `lambda_w`, `lambda_h`, `lambda_b`.
      seeds: an int or `B` ints; problem `i` starts from
        `init_params(PRNGKey(seeds[i]), K, T_i, config, init_scale)` like `solve`.
      tol: every problem is solved to `‖∇F‖ ≤ tol`.
      lambda_w, lambda_h, lambda_b: scalars or length-`B` arrays (traced, so any values
        share one compiled program). Every per-problem argument of length 1 broadcasts.
        `batch_grid` builds the Cartesian product of distributions, λ values and seeds.
      init: None/"random" (the seeded init above), "mse" (the MSE closed form for the same
        λ plus the seeded init, bias at the optimal collapse bias: fewer Newton steps), or
        `UFMParams` of batched arrays `W [B, K, d]`, `H [B, T_pad, d]`, `b [B, K]`.
      max_steps: Newton-step budget per problem; chunk_steps: Newton steps per compiled
        call between progress updates (a call returns early once all have converged);
        max_cg: conjugate-gradient iterations per Newton step.
      batch_size: problems per compiled call (a multiple of the device count). Default: 16
        per device on CPU, 8192 per device on accelerators; larger batches run in groups.
      devices: devices to shard the batch over (default: `jax.devices()`).
      progress: show a tqdm bar (converged/total, worst ‖∇F‖); default: if stderr is a TTY.
      theta0: initial damping `μ = θ‖∇F‖` of the Newton steps.

    Returns a `BatchSolveResult`. Problems that do not converge are listed by index in a
    `ConvergenceWarning` and flagged in `result.converged`.
    """
    t_start = time.perf_counter()
    enable_x64()
    config = config.validate()
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise InputError(f"tol must be a positive number, got {tol!r}")
    for name, v, lo in (("max_steps", max_steps, 1), ("chunk_steps", chunk_steps, 1),
                        ("max_cg", max_cg, 1)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise InputError(f"{name} must be an integer >= {lo}, got {v!r}")
    if not (math.isfinite(init_scale) and init_scale >= 0):
        raise InputError(f"init_scale must be a finite number >= 0, got {init_scale!r}")
    dists = _as_list(distributions, "distributions")
    K = dists[0].num_classes
    for i, dd in enumerate(dists):
        if dd.num_classes != K:
            raise InputError(f"distributions[{i}] has {dd.num_classes} classes, the first has {K}")
    from .solvers import check_distribution

    for dd in {id(dd): dd for dd in dists}.values():
        check_distribution(dd, config)
    try:
        seeds_a = _per_problem(seeds, "seeds", 0, np.int64)
    except (TypeError, ValueError):
        raise InputError("seeds must be integers") from None
    try:
        lw = _per_problem(lambda_w, "lambda_w", config.lambda_w, np.float64)
        lh = _per_problem(lambda_h, "lambda_h", config.lambda_h, np.float64)
        lb = _per_problem(lambda_b, "lambda_b", config.lambda_b, np.float64)
    except (TypeError, ValueError):
        raise InputError("lambda_w, lambda_h and lambda_b must be numbers") from None
    for name, v in (("lambda_w", lw), ("lambda_h", lh)):
        if not np.all(np.isfinite(v) & (v > 0)):
            raise InputError(f"{name} must be finite and > 0 (without it the UFM has no minimiser)")
    if not np.all(np.isfinite(lb) & (lb >= 0)):
        raise InputError("lambda_b must be finite and >= 0")
    B = _broadcast({"distributions": dists, "seeds": seeds_a, "lambda_w": lw,
                    "lambda_h": lh, "lambda_b": lb})
    expand = lambda v: v if len(v) == B else (v * B if isinstance(v, list) else np.repeat(v, B))
    dists, seeds_a, lw, lh, lb = (expand(v) for v in (dists, seeds_a, lw, lh, lb))
    lam = np.stack([lw, lh, lb], -1)

    # -- padded problem data --------------------------------------------------------------
    T_pad = max(dd.num_sets for dd in dists)
    Y = np.zeros((B, T_pad, K))
    w = np.zeros((B, T_pad))
    for i, dd in enumerate(dists):
        Y[i, :dd.num_sets] = np.asarray(dd.label_sets, dtype=np.float64)
        w[i, :dd.num_sets] = np.asarray(dd.weights, dtype=np.float64)
    mask = w > 0
    W0, H0, b0 = _initial_params(dists, T_pad, seeds_a, config, init, init_scale, lam)
    if not config.bias:
        b0[:] = 0.0
    U0 = H0 * np.sqrt(w)[..., None]

    # -- devices and groups ----------------------------------------------------------------
    devs = list(devices) if devices is not None else jax.devices()
    if not devs:
        raise InputError("devices is empty")
    placer = _Placer(devs)
    n_dev = placer.n
    if batch_size is None:
        group = _default_group(devs[0].platform, n_dev)
    else:
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        group = int(batch_size)
    group = min(group, -(-B // n_dev) * n_dev)  # no larger than the (device-padded) batch
    group = -(-group // n_dev) * n_dev
    n_groups = -(-B // group)
    total = n_groups * group
    pad = lambda x: np.concatenate([x, np.repeat(x[-1:], total - B, 0)]) if total > B else x
    Yp, wp, lamp, W0p, U0p, b0p = (pad(x) for x in (Y, w, lam, W0, U0, b0))

    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=B, desc="solve_batch", unit="problem", disable=not progress)

    out = {k: [] for k in ("W", "U", "b", "steps", "stalled", "f", "gn", "rho", "H")}
    finished = 0
    try:
        for gi in range(n_groups):
            sl = slice(gi * group, (gi + 1) * group)
            real = min(B - gi * group, group)
            prob = placer.put(_Prob(Yp[sl], wp[sl], lamp[sl]))
            st = _init_batch(*placer.put((W0p[sl], U0p[sl], b0p[sl])), prob, tol, theta0,
                             config.loss, config.bias)
            steps = 0
            while True:
                flags = placer.get((st.done, st.stalled, st.gnorm))
                over = flags[0] | flags[1]
                if bar is not None:
                    bar.n = finished + int(np.sum(over[:real]))
                    live = flags[2][:real][~flags[0][:real]]
                    bar.set_postfix_str(f"worst ‖∇F‖ {np.max(flags[2][:real]):.2e}"
                                        + (f", {live.size} left" if live.size else ""),
                                        refresh=False)
                    bar.refresh()
                if np.all(over) or steps >= max_steps:
                    break
                n = min(chunk_steps, max_steps - steps)  # traced: no recompilation
                st = _advance(st, prob, tol, config.loss, config.bias, max_cg, n)
                steps += n
            finished += real
            f, gn, rho, H = _summary(st.W, st.U, st.b, prob, config.loss, config.bias)
            got = placer.get((st.W, st.b, st.steps, st.stalled, f, gn, rho, H))
            for k, v in zip(("W", "b", "steps", "stalled", "f", "gn", "rho", "H"), got):
                out[k].append(v[:real])
    finally:
        if bar is not None:
            bar.close()

    cat = {k: np.concatenate(v) for k, v in out.items() if v}
    converged = cat["gn"] <= tol
    _warn_unconverged(converged, cat["stalled"], tol)
    H = np.where(mask[..., None], cat["H"], 0.0)
    return BatchSolveResult(
        W=jnp.asarray(cat["W"]), H=jnp.asarray(H), b=jnp.asarray(cat["b"]),
        objective=jnp.asarray(cat["f"]), grad_norm=jnp.asarray(cat["gn"]),
        certificate=jnp.asarray(cat["rho"]), converged=jnp.asarray(converged),
        steps=jnp.asarray(cat["steps"]), seconds=time.perf_counter() - t_start,
        flow_trace=None, mask=jnp.asarray(mask))
