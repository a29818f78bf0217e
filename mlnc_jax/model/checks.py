"""The checks every boundary uses: numbers, counts, seeds, tolerances, λ's, label sets,
weights. Each returns the checked value or raises `InputError` with a one-line message
naming the field; `io.schema` (files, JSON documents) and `engine.requests.validate`
(Python callers) are the two boundaries that call them.

Rules:

- numbers are JSON numbers (Python `int`/`float`, numpy scalars from the Python API), never
  strings or booleans; they must be finite and representable in float64;
- a label set is a list of distinct integers in `[0, K)`; `num_classes` is an integer >= 1;
- weights are normalised by dividing by their maximum first, so huge weights (1e308) cannot
  overflow the sum;
- `λ_W λ_H` must be a normal positive float64 (`check_lambdas`): `τ² = λ_W λ_H` is what the
  certificate and the closed forms divide by;
- seeds are integers in `[0, 2**63)`, counts in `[1, 2**31)`.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Mapping

import numpy as np

from .errors import InputError

MAX_SEED = 2**63  # seeds live in [0, 2**63): they must fit a signed 64-bit integer


MAX_COUNT = 2**31  # step, CG and chunk counts are int32 inside the compiled programs


# ρ is the square root of the top eigenvalue of GᵀG over τ: float64 resolves it to a few
# K·ε (THEORY §3), so a certificate tolerance below this would call round-off a saddle
MIN_CERT_TOL = 1e-12


_TINY = sys.float_info.min  # smallest normal positive float64


def _is_integer(v) -> bool:
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v) -> bool:
    return isinstance(v, (numbers.Real, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def check_int(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool, not a float, not a string) in `[low, high)`."""
    if not _is_integer(value):
        raise InputError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if low is not None and v < low:
        raise InputError(f"{name} must be >= {low}, got {v}")
    if high is not None and v >= high:
        raise InputError(f"{name} must be < {high}, got {v}")
    return v


def check_number(value, name: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    """A finite number representable as float64 (ints beyond ~1.8e308 are refused)."""
    if not _is_number(value):
        raise InputError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except OverflowError:
        raise InputError(f"{name} is too large for float64: {value}") from None
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite (not NaN or inf), got {v}")
    if positive and not v > 0:
        raise InputError(f"{name} must be > 0, got {v!r}")
    if nonnegative and v < 0:
        raise InputError(f"{name} must be >= 0, got {v!r}")
    return v


def check_seed(value, name: str = "seed") -> int:
    """Seeds are integers in `[0, 2**63)`."""
    return check_int(value, name, low=0, high=MAX_SEED)


def check_count(value, name: str, low: int = 1) -> int:
    """A step, iteration or chunk count: an integer in `[low, 2**31)`."""
    return check_int(value, name, low=low, high=MAX_COUNT)


def check_cert_tol(value, name: str = "cert_tol") -> float:
    """The certificate tolerance: in `[MIN_CERT_TOL, 1)` (see `MIN_CERT_TOL`)."""
    v = check_tol(value, name)
    if not MIN_CERT_TOL <= v < 1:
        raise InputError(f"{name} must be in [{MIN_CERT_TOL:g}, 1): float64 resolves the "
                         f"certificate rho only to about 1e-13, got {value!r}")
    return v


def check_tol(value, name: str = "tol") -> float:
    """A tolerance: finite and > 0 (an infinite tolerance would call step 0 converged)."""
    return check_number(value, name, positive=True)


def check_lambdas(lambda_w, lambda_h, lambda_b=0.0) -> tuple[float, float, float]:
    """Regularisation weights: `λ_W, λ_H > 0`, `λ_b >= 0`, all finite, and `τ² = λ_W λ_H` a
    normal positive float64 (a product that underflows to 0 or a subnormal, or overflows,
    makes `ρ = ‖G‖/τ` and the closed forms meaningless). Returns the three as floats."""
    lw = check_number(lambda_w, "lambda_w", positive=True)
    lh = check_number(lambda_h, "lambda_h", positive=True)
    lb = check_number(lambda_b, "lambda_b", nonnegative=True)
    tau2 = lw * lh
    if not (math.isfinite(tau2) and tau2 >= _TINY):
        raise InputError(f"lambda_w * lambda_h = {tau2!r} is not a normal positive float64 "
                         f"(lambda_w = {lw!r}, lambda_h = {lh!r}); use values whose product "
                         f"lies in [{_TINY:.3g}, {sys.float_info.max:.3g}]")
    return lw, lh, lb


def _json_type(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def check_json_object(obj, what: str) -> Mapping:
    if not isinstance(obj, Mapping):
        raise InputError(f"{what} must be an object, got JSON {_json_type(obj)}")
    return obj


def check_num_classes(value) -> int:
    return check_int(value, "num_classes", low=1)


def check_label_set(s, num_classes: int, index: int) -> tuple[int, ...]:
    """A label set: a list/tuple/array of distinct integers in `[0, K)` → sorted tuple.
    Strings and mappings are refused (iterating `"12"` would read the set {1, 2})."""
    if isinstance(s, (str, bytes, Mapping)) or not isinstance(s, (list, tuple, set, frozenset, np.ndarray, range)):
        raise InputError(f"label set #{index} must be a list of integers, got {s!r}")
    if isinstance(s, np.ndarray) and s.ndim != 1:
        raise InputError(f"label set #{index} must be a flat list of integers, got shape {s.shape}")
    items = list(s)
    for v in items:
        if not _is_integer(v):
            raise InputError(f"label set #{index} has a non-integer label {v!r}")
    ints = [int(v) for v in items]
    bad = [v for v in ints if v < 0 or v >= num_classes]
    if bad:
        raise InputError(f"label set #{index} {sorted(ints)} has label {bad[0]} outside [0, {num_classes})")
    if len(set(ints)) != len(ints):
        raise InputError(f"label set #{index} {ints} repeats a label")
    return tuple(sorted(ints))


def check_weights(weights, count: int | None = None) -> np.ndarray:
    """A flat list (or 1-D numeric array) of finite, non-negative numbers, not all zero."""
    if isinstance(weights, np.ndarray):
        if weights.ndim != 1:
            raise InputError(f"weights must be a flat list of numbers, got shape {weights.shape}")
        if weights.dtype.kind not in "iuf":
            raise InputError(f"weights must be numbers, got an array of {weights.dtype}")
        w = weights.astype(np.float64)
        if not np.all(np.isfinite(w)):
            raise InputError("weights contain NaN or inf")
    else:
        if isinstance(weights, (str, bytes, Mapping)) or not isinstance(weights, (list, tuple)):
            raise InputError(f"weights must be a list of numbers, got {type(weights).__name__}")
        w = np.asarray([check_number(v, f"weight #{i}") for i, v in enumerate(weights)],
                       dtype=np.float64).reshape(-1)
    if count is not None and w.shape[0] != count:
        raise InputError(f"{count} label sets but {w.shape[0]} weights: lengths must match")
    if np.any(w < 0):
        i = int(np.argmax(w < 0))
        raise InputError(f"weight #{i} is negative ({w[i]:g})")
    if w.size and not np.any(w > 0):
        raise InputError("all weights are zero")
    return w


def normalise_weights(w: np.ndarray) -> np.ndarray:
    """`w / Σ w` without overflow: divide by the maximum first (then the sum is <= T)."""
    w = np.asarray(w, dtype=np.float64)
    w = w / w.max()
    return w / w.sum()


def check_has_labels(dist, what: str) -> None:
    """Refuse a distribution whose only label set is the empty one (e.g. an all-zero label
    matrix): no class ever occurs, so label spectra, thresholds and the PAL closed form are
    0/0."""
    if not np.any(np.asarray(dist.class_frequencies) > 0):
        raise InputError(f"{what}: the distribution holds only the empty label set "
                         "(no class ever occurs)")


def check_min_classes(dist, low: int, what: str) -> None:
    if dist.num_classes < low:
        raise InputError(f"{what} needs at least K = {low} classes, got K = {dist.num_classes}")


