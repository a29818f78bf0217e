"""The solve's options as one record: validated once, hashable, carried from the API through
placement and into the differentiated path (`implicit`), so an option is honoured or refused
the same way under `jax.grad`, `vmap` and `jit` as outside them."""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax

from ..model import checks
from ..model.errors import InputError
from .newton import METHODS, choose_method
from .placement import bucket_rows
from .starts import STARTS

__all__ = ["SolveOptions"]


class SolveOptions(NamedTuple):
    """Everything about *how* a solve runs (the *what* is the distribution and `UFMConfig`).

    tol: every block residual (THEORY §2c) within `tol`; cert_tol: certified when
    `ρ ≤ 1 + cert_tol`; max_steps: Newton steps per problem; max_cg: CG iterations per step
    at most; chunk_steps: steps per compiled call (None: 8, or 1 on the matrix-free path);
    method: "auto", "exact" or "matrix_free"; init_scale: the random start's scale;
    batch_size: problems side by side (None: 16 per CPU device, 8192 on accelerators);
    devices: a tuple of devices (None: `jax.devices()`); progress: a tqdm bar (None: stderr
    is a TTY); warn: a `ConvergenceWarning` for problems that are not certified.
    """

    tol: float = 1e-10
    cert_tol: float = 1e-6
    max_steps: int = 500
    max_cg: int = 1024
    chunk_steps: int | None = None
    method: str = "auto"
    init_scale: float = 0.1
    batch_size: int | None = None
    devices: tuple | None = None
    progress: bool | None = None
    warn: bool = True

    def validated(self) -> SolveOptions:
        """A checked copy, or `InputError` in one line naming the option."""
        if checks.check_tol(self.tol, "tol") >= 1:  # relative: 1 or more accepts anything
            raise InputError(f"tol must be < 1, got {self.tol!r}")
        count = lambda v, name: None if v is None else checks.check_count(v, name, low=1)
        if self.method != "auto" and self.method not in METHODS:
            raise InputError(f"method must be 'auto' or one of {', '.join(map(repr, METHODS))}, "
                             f"got {self.method!r}")
        s = self.init_scale
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or not (math.isfinite(s) and s >= 0):
            raise InputError(f"init_scale must be a finite number >= 0, got {s!r}")
        devices = None if self.devices is None else tuple(self.devices)
        if devices is not None and not devices:
            raise InputError("devices is empty")
        return self._replace(
            tol=float(self.tol), cert_tol=checks.check_cert_tol(self.cert_tol),
            max_steps=count(self.max_steps, "max_steps"), max_cg=count(self.max_cg, "max_cg"),
            chunk_steps=count(self.chunk_steps, "chunk_steps"),
            batch_size=count(self.batch_size, "batch_size"), init_scale=float(s), devices=devices)

    def device_list(self) -> list:
        """The devices given, else this process's own (under `jax.distributed` the problems
        are split among the processes: `engine.processes`)."""
        if self.devices is not None:
            return list(self.devices)
        return jax.local_devices() if jax.process_count() > 1 else jax.devices()

    def method_for(self, num_sets: int, num_classes: int, dim: int) -> str:
        """The engine path, decided once per call: `method`, or by `newton.choose_method` at
        the padded row count the solve runs at."""
        if self.method != "auto":
            return self.method
        return choose_method(bucket_rows(num_sets), num_classes, dim)


def check_start(init) -> None:
    if isinstance(init, str) and init not in STARTS:
        raise InputError(f"init must be None, {', '.join(map(repr, STARTS))} or UFMParams, "
                         f"got {init!r}")
