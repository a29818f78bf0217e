"""Ctrl-C that is never lost.

Python turns SIGINT into `KeyboardInterrupt` at the next bytecode the main thread runs. When
that bytecode belongs to a finalizer (a `__del__`, a weakref or gc callback: JAX runs many),
the exception is printed as "Exception ignored" and dropped, and a long run carries on as if
nothing happened. `guard` installs a handler that also records the signal, and the long loops
(the solver's chunk loop, sweeps, network training, the experiments runner) call `check`
between steps, so an interrupt swallowed that way is raised again at the next step boundary.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_pending = False


def _handler(signum, frame):
    global _pending
    _pending = True
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
    signal.signal(signal.SIGINT, _handler)
    try:
        yield
        check()  # swallowed after the last step boundary: still an interrupt
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _pending = False
