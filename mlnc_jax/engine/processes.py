"""`solve_batch` across the processes of a `jax.distributed` job: the problems are split, not
the steps.

Every process calls `solve_batch` with the same problems (the multi-controller model: all
hosts run the same program). Process `p` of `P` solves problems `p, p + P, p + 2P, …` on
its own devices, with no traffic to the others while it runs; then each puts its finished
problems (host arrays) into the coordination service's key-value store once and reads
the others', so every process returns the whole, identical result. Per call: one value
written and `P − 1` read per process, one barrier (after which the values are deleted).
A peer that does not deliver within `MLNC_COLLECTIVE_TIMEOUT` is one
`CollectiveTimeoutError` line.

Only when the caller leaves `devices` unset: an explicit list that spans processes still
runs one global program over them (`placement.Placer`).
"""

from __future__ import annotations

import itertools
import pickle

import jax

from ..model.errors import CollectiveTimeoutError
from .watchdog import collective_timeout

__all__ = ["spread_over_processes", "my_problems", "gather_outcomes"]

_CALLS = itertools.count()  # the same sequence in every process: they make the same calls


def spread_over_processes(devices) -> bool:
    return devices is None and jax.process_count() > 1


def my_problems(n: int) -> list[int]:
    return list(range(jax.process_index(), n, jax.process_count()))


def _client():
    from jax._src import distributed

    return distributed.global_state.client


def gather_outcomes(mine: list, n: int) -> list:
    """All `n` outcomes in problem order, from each process's `mine` (`my_problems` order)."""
    P, p, call = jax.process_count(), jax.process_index(), next(_CALLS)
    client = _client()
    key = lambda q: f"mlnc_jax/solve_batch/{call}/{q}"
    timeout = collective_timeout()
    ms = int(min(timeout, 10**7) * 1000) if timeout != float("inf") else 2**31 - 1
    try:
        client.key_value_set_bytes(key(p), pickle.dumps(mine, protocol=pickle.HIGHEST_PROTOCOL))
        parts = {q: (mine if q == p else pickle.loads(client.blocking_key_value_get_bytes(key(q), ms)))
                 for q in range(P)}
        client.wait_at_barrier(f"mlnc_jax/solve_batch/{call}/read", ms)
        client.key_value_delete(key(p))
    except Exception as e:  # DEADLINE_EXCEEDED and friends, raised by the C++ client
        msg = " ".join(str(e).split())[:200]
        raise CollectiveTimeoutError(f"solve_batch: not every process delivered its problems "
                                     f"within {timeout:g} s (MLNC_COLLECTIVE_TIMEOUT): {msg}") from None
    out = [None] * n
    for q, part in parts.items():
        for j, o in zip(range(q, n, P), part):
            out[j] = o
    return out
