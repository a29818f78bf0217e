"""Ctrl-C that is never lost.

Python turns SIGINT into `KeyboardInterrupt` at the next bytecode the main thread runs. When
that bytecode belongs to a finalizer (a `__del__`, a weakref or gc callback: JAX runs many),
the exception is printed as "Exception ignored" and dropped, and a long run carries on as if
nothing happened, after printing a traceback. `guard` installs a handler that records the
signal and raises only outside finalizers (inside a `__del__` or a collection, bracketed by
gc callbacks of its own, it just records), and the long loops (the solver's chunk loop,
sweeps, network training, the experiments runner) call `check` between steps, which raises
what was recorded at the next step boundary.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import threading

_pending = False
_collecting = 0  # > 0 while the garbage collector and its callbacks run


def _gc_started(phase, info):
    global _collecting
    _collecting += phase == "start"


def _gc_stopped(phase, info):
    global _collecting
    _collecting = max(_collecting - (phase == "stop"), 0)


def _in_finalizer(frame) -> bool:
    for _ in range(64):
        if frame is None:
            return False
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _handler(signum, frame):
    global _pending
    _pending = True
    if not (_collecting or _in_finalizer(frame)):
        raise KeyboardInterrupt


def check() -> None:
    """Raise `KeyboardInterrupt` if a SIGINT arrived under `guard` and was not yet raised
    through to the caller of `guard`."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt


@contextlib.contextmanager
def guard():
    """Record SIGINT for `check` while the block runs (main thread only; a SIGINT that the
    process was started ignoring stays ignored)."""
    global _pending
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    _pending = False
    # first of the start callbacks, last of the stop ones: the whole collection is inside
    gc.callbacks.insert(0, _gc_started)
    gc.callbacks.append(_gc_stopped)
    signal.signal(signal.SIGINT, _handler)
    try:
        yield
        check()  # recorded after the last step boundary: still an interrupt
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for cb in (_gc_started, _gc_stopped):
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(cb)
        _pending = False
