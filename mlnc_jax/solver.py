"""`solve` and `solve_batch`: validate, place, run the Newton core, say what was found.

One engine behind both: `solve(dist, config, seed)` is `solve_batch([dist], config,
seeds=[seed]).item(0)`. Every result carries THEORY §2c's verdict:

* `converged`: every block residual (`mlnc_jax.newton`) is within `tol`;
* `certified`: converged, the loss is convex and `ρ ≤ 1 + cert_tol` (THEORY §3; at a
  converged point with `W ≠ 0`, `ρ ≥ 1` up to the residual, so this is `|ρ − 1| ≤ cert_tol`
  or the collapsed optimum `W = 0, ρ ≤ 1`): a global minimiser;
* `status`: `"certified"`, `"converged_uncertified"` (with the reason: non-convex loss, `d`
  below the rank of the convex solution, or a saddle), `"not_converged"`, `"diverged"`.

Everything runs in float64 inside a scoped `jax.enable_x64(True)`: the caller's JAX
configuration is left as it was, and results are float64 numpy arrays.

Per-sample problems (repeated label-set rows) are reduced to one row per distinct set and
expanded back (exact, THEORY §2: samples sharing a label set share one feature). Weights are
normalised, `π = w/Σw` (THEORY §1), so weights that do not sum to one (e.g. perturbed ones)
mean the distribution they are proportional to.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
import warnings
from typing import Any, NamedTuple, Optional, Sequence

import jax
import numpy as np

from .certificate import rank_diagnosis
from . import compile_cache, schema
from .errors import InputError
from .implicit import is_traced, traced_solve
from .labels import LabelDistribution
from .newton import METHODS, choose_method
from .placement import Placer, bucket_rows, run_problems
from .starts import STARTS, problem_data
from .ufm import UFMConfig

__all__ = ["SolveResult", "BatchSolveResult", "BatchGrid", "ConvergenceWarning", "STATUSES",
           "batch_grid", "solve", "solve_batch"]

STATUSES = ("certified", "converged_uncertified", "not_converged", "diverged")


class ConvergenceWarning(RuntimeWarning):
    """Some problems did not converge; the message lists them."""


class SolveResult(NamedTuple):
    """A solve's result (THEORY §2c); from `solve_batch` every field has a leading batch axis.

    `W [K, d]`, `H [T, d]` (rows in the distribution's order; batched: zero rows past each
    problem's `T`, marked by `mask [B, T]`), `b [K]`; `objective`; `grad_norm` (‖∇F‖ in
    `(W, H, b)`); `residual` (the largest relative block residual, the stopping test);
    `certificate` (`ρ` of §3); `converged`, `certified` (bool); `status` (one of `STATUSES`)
    and `reason` (why not certified; "" when certified); `steps` (Newton steps); `seconds`
    (this problem's share of the compute time); `hessian_products` (CG iterations over all
    steps: the engine's cost measure, comparable between devices and paths).
    """

    W: Any
    H: Any
    b: Any
    objective: Any
    grad_norm: Any
    residual: Any
    certificate: Any
    converged: Any
    certified: Any
    status: Any
    reason: Any
    steps: Any
    seconds: Any
    hessian_products: Any
    mask: Any = None

    @property
    def batch_size(self) -> int:
        return int(np.shape(self.objective)[0])

    def item(self, i: int) -> "SolveResult":
        """Problem `i` of a batched result, padding rows removed."""
        T = int(np.sum(self.mask[i]))
        pick = [f[i] for f in self[:-1]]
        pick[1] = pick[1][:T]
        return SolveResult(*pick, None)


BatchSolveResult = SolveResult


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


# -- validation: one function for every entry point -------------------------------------------


class Request(NamedTuple):
    dists: list
    config: UFMConfig
    seeds: np.ndarray
    lam: np.ndarray      # [B, 3]
    tol: float
    cert_tol: float


def _per_problem(x, name, default):
    v = np.atleast_1d(np.asarray(default if x is None else x, dtype=object))
    if v.ndim != 1:
        raise InputError(f"{name} must be a scalar or a 1-d list, got shape {v.shape}")
    return list(v)


def _broadcast(columns: dict) -> int:
    sizes = {k: len(v) for k, v in columns.items() if len(v) != 1}
    B = max(sizes.values(), default=1)
    if any(n != B for n in sizes.values()):
        desc = ", ".join(f"{k}: {n}" for k, n in sizes.items())
        raise InputError(f"batch sizes disagree ({desc}); give length 1 or one common length")
    return B


def _check_distribution(dist, config: UFMConfig, i: int) -> None:
    loss = config.loss_record
    Y, w = np.asarray(dist.label_sets), np.asarray(dist.weights)
    msg = loss.domain_error(Y, w)
    if msg is None and config.free_bias:
        msg = loss.minimiser_error(Y, w)
    if msg is not None:
        raise InputError(msg if i < 0 else f"distributions[{i}]: {msg}")


def validate(distributions, config: UFMConfig, seeds, tol, cert_tol, lambda_w=None,
             lambda_h=None, lambda_b=None) -> Request:
    """Check everything a solve needs before any compute; raise `InputError` in one line."""
    if not isinstance(config, UFMConfig):
        raise InputError(f"config must be a UFMConfig, got {type(config).__name__}")
    config = config.validate()
    if isinstance(distributions, LabelDistribution):
        distributions = [distributions]
    try:
        dists = list(distributions)
    except TypeError:
        raise InputError("distributions must be a LabelDistribution or a list of them") from None
    if not dists:
        raise InputError("distributions is empty")
    for i, d in enumerate(dists):
        if not isinstance(d, LabelDistribution):
            raise InputError(f"distributions[{i}] is not a LabelDistribution")
        if d.num_classes != dists[0].num_classes:
            raise InputError(f"distributions[{i}] has {d.num_classes} classes, the first has "
                             f"{dists[0].num_classes}")
    if schema.check_tol(tol, "tol") >= 1:  # relative: 1 or more accepts anything
        raise InputError(f"tol must be < 1, got {tol!r}")
    schema.check_cert_tol(cert_tol)
    sd = [schema.check_seed(s, "seeds") for s in _per_problem(seeds, "seeds", 0)]
    lams = [[schema.check_number(x, n) for x in _per_problem(v, n, getattr(config, n))]
            for n, v in (("lambda_w", lambda_w), ("lambda_h", lambda_h), ("lambda_b", lambda_b))]
    B = _broadcast({"distributions": dists, "seeds": sd, "lambda_w": lams[0],
                    "lambda_h": lams[1], "lambda_b": lams[2]})
    grow = lambda v: list(v) * B if len(v) == 1 else list(v)
    dists, sd = grow(dists), np.asarray([int(s) for s in grow(sd)], dtype=np.int64)
    lam = np.stack([np.asarray(grow(v), dtype=np.float64) for v in lams], -1)
    for lw, lh, lb in {tuple(r) for r in lam.tolist()}:
        config._replace(lambda_w=lw, lambda_h=lh, lambda_b=lb).validate()
    seen = {}
    for i, (d, lb) in enumerate(zip(dists, lam[:, 2])):
        key = (id(d), lb == 0)
        if key not in seen:
            seen[key] = _check_distribution(d, config._replace(lambda_b=float(lb)), i if B > 1 else -1)
    return Request(dists, config, sd, lam, float(tol), float(cert_tol))


def _check_int(name, v, lo):
    return schema.check_count(v, name, low=lo)


# -- verdicts ----------------------------------------------------------------------------------


def _verdict(o, config: UFMConfig, lam, tol, cert_tol, max_steps):
    """`(converged, certified, status, reason)` of THEORY §2c for one outcome."""
    if not o.finite:
        return False, False, "diverged", "a NaN/inf iterate (check the inputs' scale)"
    if o.residual > tol:
        why = (f"no progress at residual {o.residual:.2e} (tol below round-off for this problem?)"
               if o.stalled else f"max_steps = {max_steps} spent at residual {o.residual:.2e}")
        if o.certificate > 1 + cert_tol:
            diag = rank_diagnosis(o.gram_eigenvalues, lam[0], lam[1], config.dim, cert_tol)
            if diag.startswith("d ="):
                why += "; " + diag
        return False, False, "not_converged", why
    if not config.loss_record.convex:
        return True, False, "converged_uncertified", \
            "a non-convex loss: the certificate of THEORY §3 does not apply"
    if o.certificate <= 1 + cert_tol:
        return True, True, "certified", ""
    return True, False, "converged_uncertified", \
        f"rho = {o.certificate:.9g} > 1: " + rank_diagnosis(o.gram_eigenvalues, lam[0], lam[1],
                                                              config.dim, cert_tol)


def _assemble(outs, backs, req: Request, max_steps) -> SolveResult:
    B, d = len(outs), req.config.dim
    T_max = max(back.shape[0] for back in backs)
    H = np.zeros((B, T_max, d))
    mask = np.zeros((B, T_max), bool)
    for i, (o, back) in enumerate(zip(outs, backs)):
        T = back.shape[0]
        H[i, :T] = np.where((back >= 0)[:, None], o.H[np.maximum(back, 0)], 0.0)
        mask[i, :T] = True
    verdicts = [_verdict(o, req.config, req.lam[i], req.tol, req.cert_tol, max_steps)
                for i, o in enumerate(outs)]
    col = lambda name, dtype=np.float64: np.asarray([getattr(o, name) for o in outs], dtype=dtype)
    return SolveResult(
        W=np.stack([o.W for o in outs]), H=H, b=np.stack([o.b for o in outs]),
        objective=col("objective"), grad_norm=col("grad_norm"), residual=col("residual"),
        certificate=col("certificate"), converged=np.asarray([v[0] for v in verdicts]),
        certified=np.asarray([v[1] for v in verdicts]),
        status=np.asarray([v[2] for v in verdicts]), reason=np.asarray([v[3] for v in verdicts]),
        steps=col("steps", np.int64), seconds=col("seconds"),
        hessian_products=col("cg_iterations", np.int64), mask=mask)


def _warn(res: SolveResult) -> None:
    bad = np.flatnonzero(~res.certified)
    if bad.size == 0:
        return
    shown = "; ".join(f"{i}: {res.status[i]} ({res.reason[i]})" for i in bad[:5])
    more = f"; and {bad.size - 5} more" if bad.size > 5 else ""
    warnings.warn(f"{bad.size} of {res.batch_size} problems are not certified: {shown}{more} "
                  "(see result.status)", ConvergenceWarning, stacklevel=3)


def _default_slots(platform: str, n_dev: int) -> int:
    # XLA:CPU runs each device on one core: wide lockstep batches only add waste there;
    # accelerators want many problems at once
    return (16 if platform == "cpu" else 8192) * n_dev


def _progress_bar(total: int, enabled: Optional[bool], tol: float):
    """Problems finished, with the worst live residual; for one problem, the residual's
    decades on the way to `tol`, so the bar's ETA extrapolates the residual's descent."""
    if enabled is None:
        enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if not enabled:
        return None, None
    from tqdm.auto import tqdm

    if total == 1:
        bar = tqdm(total=1.0, desc="solve", unit="decade",
                   bar_format="{desc} |{bar}| {percentage:3.0f}% [{elapsed}<{remaining}]")
        first = []

        def update(finished, worst):
            if finished or not math.isfinite(worst) or worst <= tol:
                bar.n = bar.total
            else:
                if not first:
                    first.append(worst)
                    bar.total = max(math.log10(worst / tol), 1e-9)
                    bar.reset(total=bar.total)
                bar.n = min(max(math.log10(first[0] / worst), 0.0), bar.total)
            bar.set_description_str(f"solve: residual {worst:.1e} -> {tol:.0e}", refresh=False)
            bar.refresh()

        return bar, update
    bar = tqdm(total=total, desc="solve", unit="problem")

    def update(finished, worst):
        bar.n = finished
        bar.set_postfix_str(f"worst residual {worst:.1e}", refresh=False)
        bar.refresh()

    return bar, update


def solve_batch(distributions, config: UFMConfig, seeds=0, tol: float = 1e-10, *,
                lambda_w=None, lambda_h=None, lambda_b=None, init=None, init_scale: float = 0.1,
                max_steps: int = 500, chunk_steps: Optional[int] = None, max_cg: int = 1024,
                cert_tol: float = 1e-6, batch_size: Optional[int] = None,
                devices: Optional[Sequence] = None, progress: Optional[bool] = None,
                warn: bool = True, method: str = "auto") -> SolveResult:
    """Solve many reduced UFM problems (THEORY §2) with the Newton core.

    Args:
      distributions: a `LabelDistribution` or a list of `B` of them (same `num_classes`).
      config: static options (`loss` name or `Loss` record, `dim`, `bias`); its `lambda_*`
        are the defaults of the per-problem `lambda_w`, `lambda_h`, `lambda_b`.
      seeds: an int or `B` ints; problem `i` starts from
        `init_params(PRNGKey(seeds[i]), K, T_i, config, init_scale)`.
      tol: every block residual (THEORY §2c, `mlnc_jax.newton`) within `tol`.
      lambda_w, lambda_h, lambda_b: scalars or length-`B` lists (traced: any values share
        one compiled program); length-1 arguments broadcast. See `batch_grid`.
      init: None/"random" (the seeded start), "mse" (the MSE closed form for the same λ
        plus the seeded start; bias at the loss's collapse bias), or `UFMParams` with a
        leading batch axis (`H [B, T_max, d]`), or a list of `B` `(W, H, b)`.
      max_steps: Newton steps per problem; chunk_steps: steps per compiled call between
        progress updates (default 8, or 1 on the matrix-free path, whose steps are long);
        max_cg: the cap of conjugate-gradient iterations per step (the budget starts at 8,
        doubles while CG runs out of it and halves when a step needs a quarter of it).
      method: how Newton directions are found: "exact" (prototype blocks eliminated
        exactly; `T·r²` memory), "matrix_free" (preconditioned CG on all blocks, for large
        label spaces), or "auto" (by the flop and memory estimate of
        `newton.choose_method`). Both give the same certified optimum.
      cert_tol: certified when `ρ ≤ 1 + cert_tol` at a converged point (THEORY §2c).
      batch_size: problems solved side by side (default: 16 per device on CPU, 8192 on
        accelerators); devices: where to shard them (default `jax.devices()`).
      progress: a tqdm bar (finished/total, worst live residual); default: stderr is a TTY.
      warn: a `ConvergenceWarning` lists the problems that are not certified.

    Returns a `SolveResult` with a leading batch axis.
    """
    if is_traced(distributions, config, lambda_w, lambda_h, lambda_b):
        raise InputError("solve_batch takes concrete inputs; to differentiate, apply jax.grad "
                         "or jax.vmap to solve (or mlnc_jax.optimum) instead")
    t0 = time.perf_counter()
    req = validate(distributions, config, seeds, tol, cert_tol, lambda_w, lambda_h, lambda_b)
    compile_cache.ensure()
    max_steps = _check_int("max_steps", max_steps, 1)
    max_cg = _check_int("max_cg", max_cg, 1)
    if method != "auto" and method not in METHODS:
        raise InputError(f"method must be 'auto' or one of {', '.join(map(repr, METHODS))}, "
                         f"got {method!r}")
    if isinstance(init_scale, bool) or not isinstance(init_scale, numbers.Real) \
            or not (math.isfinite(init_scale) and init_scale >= 0):
        raise InputError(f"init_scale must be a finite number >= 0, got {init_scale!r}")
    if isinstance(init, str) and init not in STARTS:
        raise InputError(f"init must be None, {', '.join(map(repr, STARTS))} or UFMParams, "
                         f"got {init!r}")
    devs = list(devices) if devices is not None else jax.devices()
    if not devs:
        raise InputError("devices is empty")
    placer = Placer(devs)
    slots = _default_slots(devs[0].platform, placer.n) if batch_size is None else \
        _check_int("batch_size", batch_size, 1)
    K, d = req.dists[0].num_classes, req.config.dim
    n_at_once = min(slots, len(req.dists))
    T_big = bucket_rows(max(x.num_sets for x in req.dists))
    how = choose_method(T_big, K, d) if method == "auto" else method
    chunk_steps = (8 if how == "exact" else 1) if chunk_steps is None else \
        _check_int("chunk_steps", chunk_steps, 1)
    schema.check_memory(schema.estimate_solve_bytes(K, T_big, d, n_at_once, how),
                        f"solving {n_at_once} problem(s) at once with K = {K}, dim = {d}")
    with jax.enable_x64(True):
        probs, backs = problem_data(req, init, init_scale)
        bar, update = _progress_bar(len(probs), progress, req.tol)
        try:
            outs = run_problems(probs, req.config.loss_record, req.config.bias, tol=req.tol,
                                max_steps=max_steps, chunk_steps=chunk_steps, max_cg=max_cg,
                                slots=slots, placer=placer, on_progress=update, method=method)
        finally:
            if bar is not None:
                bar.close()
    res = _assemble(outs, backs, req, max_steps)
    overhead = (time.perf_counter() - t0 - float(res.seconds.sum())) / len(outs)
    res = res._replace(seconds=res.seconds + max(overhead, 0.0))
    if warn:
        _warn(res)
    return res


def solve(dist: LabelDistribution, config: UFMConfig, seed: int = 0, tol: float = 1e-10, *,
          init=None, init_scale: float = 0.1, max_steps: int = 500, max_cg: int = 1024,
          cert_tol: float = 1e-6, progress: Optional[bool] = False,
          devices: Optional[Sequence] = None, warn: bool = True,
          method: str = "auto") -> SolveResult:
    """Solve one reduced UFM problem (THEORY §2): `solve_batch([dist], ...).item(0)`.

    Under `jax.grad`/`jacfwd`/`jacrev`/`vmap` (weights or the config's λ's are tracers) it
    returns the certified optimum with derivatives (`mlnc_jax.implicit.traced_solve`).

    `init` is None/"random", "mse" or `UFMParams(W [K, d], H [T, d], b [K])` (any float
    dtype; cast to float64). See `solve_batch` for the other arguments.
    """
    if not isinstance(dist, LabelDistribution):
        raise InputError(f"dist must be a LabelDistribution, got {type(dist).__name__}")
    if is_traced(dist, config):  # inside jax.grad / jacfwd / jacrev / vmap: THEORY §8
        return traced_solve(dist, config, seed, tol, init=init, max_steps=max_steps,
                            cert_tol=cert_tol)
    if init is not None and not isinstance(init, str):
        if not (isinstance(init, tuple) and len(init) == 3):
            raise InputError("init must be None, 'random', 'mse' or UFMParams(W, H, b)")
        init = [tuple(init)]
    res = solve_batch([dist], config, seeds=[seed], tol=tol, init=init, init_scale=init_scale,
                      max_steps=max_steps, max_cg=max_cg, cert_tol=cert_tol, progress=progress,
                      devices=devices, warn=False, method=method)
    out = res.item(0)
    if warn:
        _warn(res)
    return out
