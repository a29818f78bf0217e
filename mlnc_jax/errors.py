"""Errors raised on bad input or failed solves.

`InputError` carries a one-line message that the CLI prints verbatim (no traceback).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: the message names the problem in one line."""


class SolverDivergedError(FloatingPointError):
    """An iterate became NaN/inf: the message names the step size that caused it."""
