"""One sweep shared by several workers: job arrays and JAX's multi-controller runtime.

A *share* `I/N` is the `I`-th of `N` contiguous runs of the manifest's chunks. Workers never talk to
each other: each solves its share on its own (local) devices and writes finished chunks
into the common folder, atomically, as a one-process sweep does; what is already there
and checks out against the manifest is skipped. So any number of workers may run at once
on a shared filesystem, a killed worker loses at most its running chunk, and the sweep
resumes with any worker count (a chunk's share changes with `N`, its result does not).

* `--worker I/N` (or `SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_COUNT`): no coordinator.
* `--distributed`: `jax.distributed` processes (`I = jax.process_index()`,
  `N = jax.process_count()`); process 0 writes the manifest, all meet at a barrier before
  their shares and once at the end (the coordination service, no device collective, each
  bounded by `--timeout`), and process 0 reports the whole folder.

Locks (flock, released by the kernel when the holder dies): a worker holds `.sweep.lock`
*shared* (a plain run, which holds it exclusively and also removes temporary files of
killed runs, cannot run beside workers) and `.sweep.share-I-of-N.lock` exclusively (two
copies of one share are refused). Two *different* sweeps into one folder are refused by
the manifest, as for one process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from ..model.errors import CollectiveTimeoutError, InputError

__all__ = ["Share", "parse_share", "share_from_environment", "SharedLock", "in_share",
           "initialize_distributed", "distributed_share", "barrier"]


class Share(NamedTuple):
    """Chunk share `index/count`: the chunks `i` with `i mod count = index`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_share(spec: str) -> Share:
    """`"I/N"` with `0 <= I < N`."""
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise InputError(f"--worker must be I/N (e.g. 0/4), got {spec!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"--worker {spec}: need 0 <= I < N")
    return Share(i, n)


def share_from_environment(env=os.environ) -> Share | None:
    """The share of a SLURM job-array task (`SLURM_ARRAY_TASK_ID` counted from
    `SLURM_ARRAY_TASK_MIN`, out of `SLURM_ARRAY_TASK_COUNT`), else None."""
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    try:
        i = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return parse_share(f"{i}/{int(env['SLURM_ARRAY_TASK_COUNT'])}")
    except ValueError:
        raise InputError("SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT are not integers") from None


def in_share(chunks, share: Share | None, num_chunks: int) -> list[int]:
    """The chunks of `chunks` in `share`: the `index`-th of `count` contiguous runs of the
    manifest's `num_chunks` chunks. Contiguous, because the manifest orders chunks by loss,
    `K` and λ's: a worker then compiles few of the sweep's programs (round-robin shares made
    every worker compile all of them, and two local processes were 1.5× slower than one)."""
    if share is None:
        return list(chunks)
    lo = share.index * num_chunks // share.count
    hi = (share.index + 1) * num_chunks // share.count
    return [i for i in chunks if lo <= i < hi]


def _flock(path: Path, exclusive: bool, what: str) -> int:
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise InputError(f"cannot create the lock file {path}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise InputError(f"{what} is running in {path.parent}; wait for it or stop it") from None
    return fd


class SharedLock:
    """A worker's two locks (module docstring)."""

    def __init__(self, out: Path, share: Share, main_lock: str):
        self.paths = (out / main_lock, out / f".sweep.share-{share.index}-of-{share.count}.lock")
        self.share, self.fds = share, []

    def __enter__(self):
        self.fds.append(_flock(self.paths[0], False, "a sweep that is not shared (no --worker)"))
        try:
            self.fds.append(_flock(self.paths[1], True, f"another worker {self.share}"))
        except InputError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        return False


def _no_abort_client():
    """`jax.distributed` builds its runtime client without a missed-heartbeat callback, and
    the C++ default then aborts the process with a stack trace when a peer never registers
    or dies. With a callback the failure comes back as a Python exception instead."""
    import functools

    from jax._src import distributed

    make = distributed._jax.get_distributed_runtime_client
    if not isinstance(make, functools.partial):
        distributed._jax.get_distributed_runtime_client = functools.partial(
            make, missed_heartbeat_callback=lambda *a: None)


def initialize_distributed(coordinator: str | None, num_processes: int | None,
                           process_id: int | None, timeout_s: int) -> None:
    """`jax.distributed.initialize` (the bare call detects SLURM, Open MPI, Kubernetes, Cloud
    TPU); on CPU the collectives go through gloo. Peers or a coordinator that never answer
    are one `CollectiveTimeoutError` line after `timeout_s`, not a C++ stack (the command
    line then leaves without interpreter teardown, whose shutdown would print one)."""
    import jax

    if jax.distributed.is_initialized():
        return
    _no_abort_client()
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   initialization_timeout=int(timeout_s),
                                   heartbeat_timeout_seconds=max(10, int(timeout_s)))
    except Exception as e:  # JaxRuntimeError, RuntimeError, ValueError from cluster detection
        msg = " ".join(str(e).split())[:200]
        raise CollectiveTimeoutError(
            f"jax.distributed.initialize did not complete (coordinator {coordinator or 'auto'}, "
            f"{num_processes or 'auto'} processes, timeout {timeout_s} s): the other processes "
            f"did not all connect ({msg})") from None


def distributed_share() -> Share | None:
    import jax

    n = jax.process_count()
    return Share(jax.process_index(), n) if n > 1 else None


def barrier(name: str, timeout_s: float) -> None:
    """All processes of `jax.distributed` meet here, or one line after `timeout_s`."""
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:
        return
    try:
        client.wait_at_barrier(f"mlnc_jax/{name}", int(timeout_s * 1000))
    except Exception as e:
        msg = " ".join(str(e).split())[:200]
        raise CollectiveTimeoutError(f"the sweep's processes did not all reach '{name}' within "
                                     f"{timeout_s:g} s (a peer died or is stuck): {msg}") from None
