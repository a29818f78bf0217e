"""A bound on waiting for devices: over several devices a chunk of Newton steps that waits
on a collective forever (XLA's CPU collectives can deadlock, `engine.placement`) must fail
with one line, not hang. The wait runs on a helper thread; after `MLNC_COLLECTIVE_TIMEOUT`
seconds (default 1800, `off` waits forever) it raises `CollectiveTimeoutError`.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import threading

import jax

from ..model.errors import CollectiveTimeoutError, InputError
from . import interrupts

__all__ = ["collective_timeout", "wait_for"]


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


def wait_for(x, n_devices: int) -> None:
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
