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
* **Watchdog.** Over several devices each chunk is awaited at most
  `MLNC_COLLECTIVE_TIMEOUT` seconds (`engine.watchdog`): a collective that never completes
  fails with one line instead of hanging.
* **Time.** Each chunk's wall time is shared among the slots that were live in it, so the
  per-problem `seconds` add up to the time spent computing.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..model.losses import Loss
from . import interrupts
from .newton import Problem, choose_method, init_state, newton_step, summarize
from .watchdog import wait_for

__all__ = ["bucket_rows", "Placer", "ProblemData", "Outcome", "run_problems"]



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
        # devices of other processes (jax.distributed): arrays are assembled from each
        # process's part and fetched by an all-gather; this process's own devices need neither
        self.multi_process = any(d.process_index != jax.process_index() for d in self.devices)
        if self.n > 1:
            from jax.sharding import Mesh, NamedSharding
            from jax.sharding import PartitionSpec as P

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
    return jax.vmap(lambda W, U, b, p: init_state(W, U, b, p, tol, theta0, loss, bias))(W, U, b, prob)


@partial(jax.jit, static_argnames=("loss", "bias", "max_cg", "method"), donate_argnums=(0,))
def _advance(state, prob, tol, max_steps, num_steps, loss: Loss, bias: bool, max_cg: int,
             method: str):
    """Up to `num_steps` Newton steps on every slot; returns early once no slot is live."""
    step = jax.vmap(lambda st, p: newton_step(st, p, tol, max_steps, loss, bias, max_cg, method))
    body = lambda c: (c[0] + 1, step(c[1], prob))
    over = lambda st: st.done | st.stalled | (st.steps >= max_steps)
    cond = lambda c: (c[0] < num_steps) & ~jnp.all(over(c[1]))
    return jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), state))[1]


@partial(jax.jit, donate_argnums=(0,))
def _refill(state, fresh, replace):
    pick = lambda a, b: jnp.where(replace.reshape(replace.shape + (1,) * (a.ndim - 1)), b, a)
    return jax.tree_util.tree_map(pick, state, fresh)


@partial(jax.jit, static_argnames=("loss", "bias"))
def _summaries(W, U, b, prob, loss: Loss, bias: bool):
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
                 on_progress: Callable[[int, float], None] | None = None) -> list[Outcome]:
    """Solve every problem with the Newton core; returns one `Outcome` per problem, in order.

    `slots` (a multiple of the device count) caps the vmapped width per bucket;
    `on_progress(finished, worst)` is called after every chunk (`worst`: the largest live
    residual, or once none is live, the largest final one so far); `method`
    ("auto", or one of `newton.METHODS`) picks how Newton directions are found, per bucket
    with "auto" (`newton.choose_method`).
    """
    out: list[Outcome | None] = [None] * len(problems)
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


def _worst_final(out) -> float:
    return max((o.residual for o in out if o is not None), default=0.0)


class _Slots:
    """The host's view of one bucket's slots: which problem each holds (`-1`: idle), the
    queue still waiting, and the compute time each slot's problem has had."""

    def __init__(self, members, n_slots):
        self.members, self.queue = members, list(members)
        self.of = [self.queue.pop(0) if self.queue else -1 for _ in range(n_slots)]
        self.spent = np.zeros(n_slots)

    def filled(self, picks=None):
        """Problem per slot for stacking: idle slots (and those not in `picks`) repeat one."""
        return [i if i >= 0 and (picks is None or j in picks) else self.members[-1]
                for j, i in enumerate(self.of)]

    def active(self):
        return np.array([i >= 0 for i in self.of])


def _harvest(problems, slots, harvest, st, prob, loss, bias, placer, flags, out) -> int:
    """Record the outcome of every slot in `harvest`, hand the slot the next queued problem."""
    done, stalled, steps, cgs = flags
    sm = placer.get(_summaries(st.W, st.U, st.b, prob, loss, bias))
    Wh, bh = placer.get((st.W, st.b))
    for j in harvest:
        i = slots.of[j]
        T = problems[i].w.shape[0]
        out[i] = Outcome(Wh[j], sm.H[j, :T], bh[j], float(sm.objective[j]),
                         float(sm.grad_norm[j]), float(sm.residual[j]),
                         float(sm.certificate[j]), sm.gram_eigenvalues[j], int(steps[j]),
                         bool(done[j]), bool(stalled[j]), bool(sm.finite[j]), slots.spent[j],
                         int(cgs[j]))
        slots.of[j] = slots.queue.pop(0) if slots.queue else -1
        slots.spent[j] = 0.0
    return len(harvest)


def _refill_slots(problems, slots, refill, st, prob_h, T_pad, placer, start):
    """Start the newly assigned problems of slots `refill`; the other slots keep running."""
    new_prob, (W, U, b) = _slot_arrays(problems, slots.filled(set(refill)), T_pad)
    mask = np.zeros(len(slots.of), bool)
    mask[refill] = True
    for name in ("Y", "w", "lam"):
        getattr(prob_h, name)[mask] = getattr(new_prob, name)[mask]
    prob = placer.put_problem(prob_h)
    fresh = start(placer.put_params(W, U, b), prob)
    return _refill(st, fresh, placer.put(mask, sharded=False)), prob


def _run_bucket(problems, members, T_pad, n_slots, loss, bias, tol, max_steps, chunk_steps,
                max_cg, placer, theta0, out, finished, on_progress, method):
    slots = _Slots(members, n_slots)
    prob_h, (W, U, b) = _slot_arrays(problems, slots.filled(), T_pad)
    prob = placer.put_problem(prob_h)
    tol_a, ms_a = jnp.asarray(tol), jnp.asarray(max_steps, jnp.int32)
    start = lambda params, p: _init_slots(*params, p, tol_a, theta0, loss, bias)
    st = start(placer.put_params(W, U, b), prob)
    while True:
        interrupts.check()
        done, stalled, steps, res, cgs = placer.get((st.done, st.stalled, st.steps, st.residual,
                                                     st.cg_total))
        over = done | stalled | (steps >= max_steps)
        live = slots.active() & ~over
        if on_progress is not None and live.any():  # else the harvest below reports
            on_progress(finished, float(np.max(res[live])))
        harvest = [j for j, i in enumerate(slots.of) if i >= 0 and over[j]]
        if harvest:
            finished += _harvest(problems, slots, harvest, st, prob, loss, bias, placer,
                                 (done, stalled, steps, cgs), out)
            refill = [j for j in harvest if slots.of[j] >= 0]
            if refill:
                st, prob = _refill_slots(problems, slots, refill, st, prob_h, T_pad, placer, start)
            if on_progress is not None:
                on_progress(finished, float(np.max(res[live])) if live.any() else _worst_final(out))
        if not slots.active().any():
            interrupts.check()  # a SIGINT swallowed during the last chunk
            return finished
        active = slots.active()
        t0 = time.perf_counter()
        st = _advance(st, prob, tol_a, ms_a, jnp.asarray(chunk_steps, jnp.int32), loss, bias, max_cg,
                      method)
        wait_for(st.done, placer.n)
        slots.spent[active] += (time.perf_counter() - t0) / max(int(active.sum()), 1)
