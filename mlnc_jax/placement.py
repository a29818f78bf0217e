"""Running the Newton core on many problems: shape buckets, slots, devices, the host loop.

* **Shape buckets.** A problem's `T` rows are padded with zero-weight rows to the next
  power of two (at least 8; above 1024 rows, `2^k · {1, 1.25, 1.5, 1.75}`), so figures and
  sweeps over many supports compile a handful of programs, not one per `T`.
* **Slots.** Problems run in a fixed number of vmapped slots, the same for every bucket of
  one call (a power of two, a multiple of the device count). A chunk of Newton steps runs on every slot; a slot whose
  problem is done (or out of steps) is harvested and refilled with the next problem, so a
  slow problem never holds a finished one's slot idle and every group size compiles once.
* **Devices.** With several devices the slot axis is sharded over them (a 1-d `Mesh` named
  ``"batch"``, `NamedSharding(mesh, P("batch"))`); a single problem has its label-set axis
  `T` sharded instead (`P(None, "rows")`, GSPMD turns the `W`/`b` blocks into reductions
  over devices). Multi-process runs place inputs with `jax.make_array_from_callback` and
  gather with `process_allgather`.
* **Watchdog.** Over several devices each chunk is awaited for at most
  `MLNC_COLLECTIVE_TIMEOUT` seconds (default 1800), then `CollectiveTimeoutError`: a
  collective that never completes fails with one line instead of hanging.
* **Time.** Each chunk's wall time is shared among the slots that were live in it, so the
  per-problem `seconds` add up to the time spent computing.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import threading
import time
from functools import partial
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import interrupts
from .errors import CollectiveTimeoutError, InputError
from .losses import Loss
from .newton import Problem, choose_method, init_state, newton_step, summarize

__all__ = ["bucket_rows", "Placer", "ProblemData", "Outcome", "run_problems", "TRACE_COUNT"]

TRACE_COUNT = {"init": 0, "advance": 0, "summary": 0, "refill": 0}  # one per compilation


def bucket_rows(T: int, minimum: int = 8) -> int:
    """The padded row count for `T` label sets: the next power of two (at least 8) up to
    1024 rows, where compiling costs more than padding; `2^k · {1, 1.25, 1.5, 1.75}` above,
    where padding costs more than compiling."""
    if T <= minimum:
        return minimum
    e = 2 ** int(math.floor(math.log2(T)))
    steps = (1.0, 2.0) if T <= 1024 else (1.0, 1.25, 1.5, 1.75, 2.0)
    return next(int(e * m) for m in steps if e * m >= T)


def _pow2ceil(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


class Placer:
    """Puts host arrays on the devices and fetches them.

    `axis="batch"` shards the slot axis (many problems); `axis="rows"` shards the label-set
    axis `T` of one problem (its per-set work is independent; the `W`/`b` blocks become
    reductions over the devices) and replicates `W`, `b` and the λ's.
    """

    def __init__(self, devices: Sequence, axis: str = "batch"):
        self.devices = list(devices)
        self.n = len(self.devices)
        self.axis = axis
        self.multi_process = jax.process_count() > 1
        if self.n > 1:
            from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

            mesh = Mesh(np.asarray(self.devices), (axis,))
            self._lead = NamedSharding(mesh, P(axis) if axis == "batch" else P(None, axis))
            self._replicated = NamedSharding(mesh, P())

    def put(self, tree, sharded: bool = True):
        """Place `tree`: sharded over the placer's axis, or replicated (`sharded=False`,
        only meaningful for `axis="rows"`)."""
        def one(x):
            x = np.asarray(x)
            if self.n == 1:
                return jax.device_put(x, self.devices[0])
            sh = self._lead if (sharded or self.axis == "batch") else self._replicated
            if self.multi_process:
                return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])
            return jax.device_put(x, sh)

        return jax.tree_util.tree_map(one, tree)

    def put_problem(self, prob: Problem) -> Problem:
        return Problem(self.put(prob.Y), self.put(prob.w), self.put(prob.lam, sharded=False))

    def put_params(self, W, U, b):
        return self.put(W, sharded=False), self.put(U), self.put(b, sharded=False)

    def get(self, tree):
        if self.multi_process:
            from jax.experimental import multihost_utils

            return jax.tree_util.tree_map(
                np.asarray, multihost_utils.process_allgather(tree, tiled=True))
        return jax.tree_util.tree_map(np.asarray, tree)


class ProblemData(NamedTuple):
    """One problem on the host: `Y [T, K]`, `w [T]`, `lam [3]`, start `W, H, b`."""

    Y: np.ndarray
    w: np.ndarray
    lam: np.ndarray
    W0: np.ndarray
    H0: np.ndarray
    b0: np.ndarray


class Outcome(NamedTuple):
    """One problem's end state (numpy, rows unpadded) and its share of the wall time."""

    W: np.ndarray
    H: np.ndarray
    b: np.ndarray
    objective: float
    grad_norm: float
    residual: float
    certificate: float
    gram_eigenvalues: np.ndarray
    steps: int
    done: bool
    stalled: bool
    finite: bool
    seconds: float
    cg_iterations: int = 0


# -- compiled programs over the slot axis -------------------------------------------------------


@partial(jax.jit, static_argnames=("loss", "bias"))
def _init_slots(W, U, b, prob, tol, theta0, loss: Loss, bias: bool):
    TRACE_COUNT["init"] += 1
    return jax.vmap(lambda W, U, b, p: init_state(W, U, b, p, tol, theta0, loss, bias))(W, U, b, prob)


@partial(jax.jit, static_argnames=("loss", "bias", "max_cg", "method"), donate_argnums=(0,))
def _advance(state, prob, tol, max_steps, num_steps, loss: Loss, bias: bool, max_cg: int,
             method: str):
    """Up to `num_steps` Newton steps on every slot; returns early once no slot is live."""
    TRACE_COUNT["advance"] += 1
    step = jax.vmap(lambda st, p: newton_step(st, p, tol, max_steps, loss, bias, max_cg, method))
    body = lambda c: (c[0] + 1, step(c[1], prob))
    over = lambda st: st.done | st.stalled | (st.steps >= max_steps)
    cond = lambda c: (c[0] < num_steps) & ~jnp.all(over(c[1]))
    return jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), state))[1]


@partial(jax.jit, donate_argnums=(0,))
def _refill(state, fresh, replace):
    TRACE_COUNT["refill"] += 1
    pick = lambda a, b: jnp.where(replace.reshape(replace.shape + (1,) * (a.ndim - 1)), b, a)
    return jax.tree_util.tree_map(pick, state, fresh)


@partial(jax.jit, static_argnames=("loss", "bias"))
def _summaries(W, U, b, prob, loss: Loss, bias: bool):
    TRACE_COUNT["summary"] += 1
    return jax.vmap(lambda W, U, b, p: summarize(W, U, b, p, loss, bias))(W, U, b, prob)


# -- the host loop ----------------------------------------------------------------------------------


def _slot_arrays(problems, order, T_pad):
    """Stack problems `order` (row-padded to `T_pad`) into `Problem` and `(W, U, b)`."""
    n = len(order)
    K, d = problems[order[0]].W0.shape
    Y = np.zeros((n, T_pad, K))
    w = np.zeros((n, T_pad))
    U = np.zeros((n, T_pad, d))
    W = np.zeros((n, K, d))
    b = np.zeros((n, K))
    lam = np.zeros((n, 3))
    for j, i in enumerate(order):
        p = problems[i]
        T = p.w.shape[0]
        Y[j, :T], w[j, :T], lam[j] = p.Y, p.w, p.lam
        U[j, :T] = p.H0 * np.sqrt(p.w)[:, None]
        W[j], b[j] = p.W0, p.b0
    return Problem(Y, w, lam), (W, U, b)


def run_problems(problems: Sequence[ProblemData], loss: Loss, bias: bool, *, tol: float,
                 max_steps: int, chunk_steps: int, max_cg: int, slots: int, placer: Placer,
                 theta0: float = 1.0, method: str = "auto",
                 on_progress: Optional[Callable[[int, float], None]] = None) -> list[Outcome]:
    """Solve every problem with the Newton core; returns one `Outcome` per problem, in order.

    `slots` (a multiple of the device count) caps the vmapped width per bucket;
    `on_progress(finished, worst)` is called after every chunk (`worst`: the largest live
    residual, or once none is live, the largest final one so far); `method`
    ("auto", or one of `newton.METHODS`) picks how Newton directions are found, per bucket
    with "auto" (`newton.choose_method`).
    """
    out: list[Optional[Outcome]] = [None] * len(problems)
    buckets: dict[int, list[int]] = {}
    for i, p in enumerate(problems):
        buckets.setdefault(bucket_rows(p.w.shape[0]), []).append(i)
    finished = 0
    if len(problems) == 1 and placer.n > 1:  # one problem: shard its rows instead
        placer = _rows_placer(placer)
    # one slot count per call: every bucket reuses the same program shape family
    n_slots = min(slots, _pow2ceil(max(len(m) for m in buckets.values())))
    for T_pad, members in sorted(buckets.items()):
        if placer.axis == "batch":
            n_slots = -(-n_slots // placer.n) * placer.n
        else:
            T_pad = -(-T_pad // placer.n) * placer.n
        K, d = problems[members[0]].W0.shape
        how = choose_method(T_pad, K, d) if method == "auto" else method
        finished = _run_bucket(problems, members, T_pad, n_slots, loss, bias, tol, max_steps,
                               chunk_steps, max_cg, placer, theta0, out, finished, on_progress,
                               how)
    return out


def _rows_placer(placer: Placer) -> Placer:
    """The placer of one problem over several devices. XLA's in-process CPU collectives
    deadlock inside the Newton core's loops (an all-reduce inside a `while_loop` next to a
    LAPACK call: measured on 2 and 4 host devices, 2 cores), so on CPU devices the problem
    runs on the first device instead, with a warning; on accelerators its rows are sharded."""
    forced = os.environ.get("MLNC_CPU_ROW_SHARDING", "") == "1"  # to diagnose XLA only
    if all(d.platform == "cpu" for d in placer.devices) and not forced:
        import warnings

        warnings.warn(f"one problem over {placer.n} CPU devices: XLA's CPU collectives "
                      "deadlock in the solver's loops, so it runs on one device",
                      RuntimeWarning, stacklevel=3)
        return Placer(placer.devices[:1], axis="batch")
    return Placer(placer.devices, axis="rows")


def collective_timeout() -> float:
    """The watchdog bound in seconds on one chunk of Newton steps over several devices:
    `MLNC_COLLECTIVE_TIMEOUT` (default 1800; `0` or `off` waits forever)."""
    raw = os.environ.get("MLNC_COLLECTIVE_TIMEOUT", "1800").strip().lower()
    if raw in ("0", "off", "none", ""):
        return math.inf
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"MLNC_COLLECTIVE_TIMEOUT={raw!r}: expected seconds or 'off'") from None
    if not value > 0:
        raise InputError(f"MLNC_COLLECTIVE_TIMEOUT={raw!r}: expected seconds > 0 or 'off'")
    return value


def _wait(x, n_devices: int) -> None:
    """Block until `x` is computed. Over several devices a chunk that waits on a collective
    forever must not hang the caller: the wait runs on a helper thread and gives up after
    `collective_timeout()` seconds with `CollectiveTimeoutError`."""
    bound = collective_timeout() if n_devices > 1 else math.inf
    if math.isinf(bound):
        jax.block_until_ready(x)
        return
    finished = threading.Event()
    failure: list[BaseException] = []

    def wait():
        try:
            jax.block_until_ready(x)
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            failure.append(e)
        finished.set()

    threading.Thread(target=wait, daemon=True, name="mlnc-wait").start()
    while not finished.wait(0.25):  # short waits: Ctrl-C stays responsive
        interrupts.check()
        bound -= 0.25
        if bound <= 0:
            # the blocked device threads abort interpreter teardown (exit 134): leave first
            atexit.register(_leave_without_teardown)
            raise CollectiveTimeoutError(
                f"a chunk of Newton steps over {n_devices} devices did not finish within "
                f"{collective_timeout():g} s (MLNC_COLLECTIVE_TIMEOUT): a collective that "
                "never completes; rerun on one device (devices=jax.devices()[:1])")
    if failure:
        raise failure[0]


def _leave_without_teardown() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe must not block the exit
            pass
    os._exit(1)


def _worst_final(out) -> float:
    return max((o.residual for o in out if o is not None), default=0.0)


def _run_bucket(problems, members, T_pad, n_slots, loss, bias, tol, max_steps, chunk_steps,
                max_cg, placer, theta0, out, finished, on_progress, method):
    queue = list(members)
    slot_of = [queue.pop(0) if queue else -1 for _ in range(n_slots)]
    fill = [i if i >= 0 else members[-1] for i in slot_of]  # idle slots repeat a problem
    prob_h, (W, U, b) = _slot_arrays(problems, fill, T_pad)
    prob = placer.put_problem(prob_h)
    tol_a, ms_a = jnp.asarray(tol), jnp.asarray(max_steps, jnp.int32)
    st = _init_slots(*placer.put_params(W, U, b), prob, tol_a, theta0, loss, bias)
    spent = np.zeros(n_slots)
    while True:
        interrupts.check()
        done, stalled, steps, res, cgs = placer.get((st.done, st.stalled, st.steps, st.residual,
                                                     st.cg_total))
        over = done | stalled | (steps >= max_steps)
        live = np.array([i >= 0 for i in slot_of]) & ~over
        if on_progress is not None and live.any():  # else the harvest below reports
            on_progress(finished, float(np.max(res[live])))
        harvest = [j for j, i in enumerate(slot_of) if i >= 0 and over[j]]
        if harvest:
            sm = placer.get(_summaries(st.W, st.U, st.b, prob, loss, bias))
            Wh, bh = placer.get((st.W, st.b))
            for j in harvest:
                i = slot_of[j]
                T = problems[i].w.shape[0]
                out[i] = Outcome(Wh[j], sm.H[j, :T], bh[j], float(sm.objective[j]),
                                 float(sm.grad_norm[j]), float(sm.residual[j]),
                                 float(sm.certificate[j]), sm.gram_eigenvalues[j], int(steps[j]),
                                 bool(done[j]), bool(stalled[j]), bool(sm.finite[j]), spent[j],
                                 int(cgs[j]))
                slot_of[j] = queue.pop(0) if queue else -1
                spent[j] = 0.0
                finished += 1
            refill = [j for j in harvest if slot_of[j] >= 0]
            if refill:
                new_prob, (W, U, b) = _slot_arrays(problems, [slot_of[j] if j in refill else
                                                              members[-1] for j in range(n_slots)], T_pad)
                mask = np.zeros(n_slots, bool)
                mask[refill] = True
                for name in ("Y", "w", "lam"):
                    getattr(prob_h, name)[mask] = getattr(new_prob, name)[mask]
                prob = placer.put_problem(prob_h)
                fresh = _init_slots(*placer.put_params(W, U, b), prob, tol_a, theta0, loss, bias)
                st = _refill(st, fresh, placer.put(mask, sharded=False))
            if on_progress is not None:
                on_progress(finished, float(np.max(res[live])) if live.any() else _worst_final(out))
        if all(i < 0 for i in slot_of):
            return finished
        active = np.array([i >= 0 for i in slot_of])
        t0 = time.perf_counter()
        st = _advance(st, prob, tol_a, ms_a, jnp.asarray(chunk_steps, jnp.int32), loss, bias, max_cg,
                      method)
        _wait(st.done, placer.n)
        spent[active] += (time.perf_counter() - t0) / max(int(active.sum()), 1)
