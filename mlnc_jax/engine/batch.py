"""`solve_batch`: validate once, plan the run (devices, slots, engine path, memory), run
the Newton core through `engine.placement`, and say what was found (`engine.result`).

Everything runs in float64 inside a scoped `jax.enable_x64(True)`: the caller's JAX
configuration is left as it was, and results are float64 numpy arrays.

Per-sample problems (repeated label-set rows) are reduced to one row per distinct set and
expanded back (exact, THEORY §2: samples sharing a label set share one feature). Weights are
normalised, `π = w/Σw` (THEORY §1), so weights that do not sum to one (e.g. perturbed ones)
mean the distribution they are proportional to.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import NamedTuple

import jax

from ..model.budget import check_memory, estimate_solve_bytes
from ..model.errors import InputError
from ..model.ufm import UFMConfig
from . import compile_cache, processes
from .options import SolveOptions, check_start
from .placement import Placer, bucket_rows, run_problems
from .requests import Request, is_traced, validate
from .result import SolveResult, assemble, warn_uncertified
from .starts import problem_data

__all__ = ["solve_batch", "solve_batch_with"]


def _default_slots(platform: str, n_dev: int) -> int:
    # XLA:CPU runs each device on one core: wide lockstep batches only add waste there;
    # accelerators want many problems at once
    return (16 if platform == "cpu" else 8192) * n_dev


def _progress_bar(total: int, enabled: bool | None, tol: float):
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


def _refuse_tracers(*args) -> None:
    if is_traced(*args):
        raise InputError("solve_batch takes concrete inputs; to differentiate, apply jax.grad "
                         "or jax.vmap to solve (or mlnc_jax.optimum) instead")


class _Plan(NamedTuple):
    placer: Placer
    slots: int
    chunk_steps: int
    method: str


def _plan(req: Request, opts: SolveOptions) -> _Plan:
    """Devices, slots, engine path (decided here, once) and chunk length of one call;
    refused (with the estimate) when the problems side by side would not fit in memory."""
    devs = opts.device_list()
    placer = Placer(devs)
    slots = _default_slots(devs[0].platform, placer.n) if opts.batch_size is None else \
        opts.batch_size
    K, d = req.dists[0].num_classes, req.config.dim
    n_at_once = min(slots, len(req.dists))
    T_max = max(x.num_sets for x in req.dists)
    how = opts.method_for(T_max, K, d)
    chunk_steps = (8 if how == "exact" else 1) if opts.chunk_steps is None else opts.chunk_steps
    check_memory(estimate_solve_bytes(K, bucket_rows(T_max), d, n_at_once, how),
                 f"solving {n_at_once} problem(s) at once with K = {K}, dim = {d}")
    return _Plan(placer, slots, chunk_steps, how)


def _run(req: Request, plan: _Plan, opts: SolveOptions, init):
    with jax.enable_x64(True):
        probs, backs = problem_data(req, init, opts.init_scale)
        bar, update = _progress_bar(len(probs), opts.progress, req.tol)
        spread = processes.spread_over_processes(opts.devices)
        mine = processes.my_problems(len(probs)) if spread else range(len(probs))
        try:
            outs = run_problems([probs[j] for j in mine], req.config.loss_record,
                                req.config.bias, tol=req.tol, max_steps=opts.max_steps,
                                chunk_steps=plan.chunk_steps, max_cg=opts.max_cg,
                                slots=plan.slots, placer=plan.placer, on_progress=update,
                                method=plan.method) if len(mine) else []
            if spread:  # jax.distributed: each process solved its share on its own devices
                outs = processes.gather_outcomes(outs, len(probs))
        finally:
            if bar is not None:
                bar.close()
    return outs, backs


def solve_batch_with(distributions, config: UFMConfig, opts: SolveOptions, seeds=0, *,
                     lambda_w=None, lambda_h=None, lambda_b=None, init=None) -> SolveResult:
    """`solve_batch` with its options as one `SolveOptions` record."""
    t0 = time.perf_counter()
    _refuse_tracers(distributions, config, lambda_w, lambda_h, lambda_b)
    opts = opts.validated()
    check_start(init)
    req = validate(distributions, config, seeds, opts.tol, opts.cert_tol, lambda_w, lambda_h,
                   lambda_b)
    compile_cache.ensure()  # before the first compilation
    plan = _plan(req, opts)
    outs, backs = _run(req, plan, opts, init)
    res = assemble(outs, backs, req, opts.max_steps)
    overhead = max((time.perf_counter() - t0 - float(res.seconds.sum())) / len(outs), 0.0)
    res = res._replace(seconds=res.seconds + overhead)
    if opts.warn:
        warn_uncertified(res)
    return res


def solve_batch(distributions, config: UFMConfig, seeds=0, tol: float = 1e-10, *,
                lambda_w=None, lambda_h=None, lambda_b=None, init=None, init_scale: float = 0.1,
                max_steps: int = 500, chunk_steps: int | None = None, max_cg: int = 1024,
                cert_tol: float = 1e-6, batch_size: int | None = None,
                devices: Sequence | None = None, progress: bool | None = None,
                warn: bool = True, method: str = "auto") -> SolveResult:
    """Solve many reduced UFM problems (THEORY §2) with the Newton core.

    Args:
      distributions: a `LabelDistribution` or a list of `B` of them (same `num_classes`).
      config: static options (`loss` name or `Loss` record, `dim`, `bias`); its `lambda_*`
        are the defaults of the per-problem `lambda_w`, `lambda_h`, `lambda_b`.
      seeds: an int or `B` ints; problem `i` starts from
        `init_params(PRNGKey(seeds[i]), K, T_i, config, init_scale)`.
      tol: every block residual (THEORY §2c, `mlnc_jax.engine.newton`) within `tol`.
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

    Returns a `SolveResult` with a leading batch axis."""
    opts = SolveOptions(tol=tol, cert_tol=cert_tol, max_steps=max_steps, max_cg=max_cg,
                        chunk_steps=chunk_steps, method=method, init_scale=init_scale,
                        batch_size=batch_size, devices=devices, progress=progress, warn=warn)
    return solve_batch_with(distributions, config, opts, seeds, lambda_w=lambda_w,
                            lambda_h=lambda_h, lambda_b=lambda_b, init=init)
