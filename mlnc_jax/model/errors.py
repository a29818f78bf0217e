"""Errors raised on bad input or failed solves.

`InputError` carries a one-line message that the CLI prints verbatim (no traceback).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: the message names the problem in one line."""


class SolverDivergedError(FloatingPointError):
    """An iterate became NaN/inf: the message names the step size that caused it."""


class NotCertifiedError(RuntimeError):
    """A solve that must be a certified global minimiser (e.g. to differentiate it) is not."""


class RankChangeError(ArithmeticError):
    """The optimum sits at a rank change (THEORY §8): it is not differentiable there. A fact
    about the problem's numbers, not bad input (the CLI exits 3 for it)."""


class CollectiveTimeoutError(RuntimeError):
    """A chunk of Newton steps over several devices did not finish within the watchdog bound
    (`MLNC_COLLECTIVE_TIMEOUT` seconds): a collective that never completes. The computation
    is abandoned; the process should exit (its device threads may still be blocked)."""
