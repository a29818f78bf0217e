"""The one input validator: distribution JSON, label matrices, sweep configs, options.

Every function here either returns a checked value or raises `InputError` with a one-line
message that names the offending field; nothing else escapes on bad input. Rules:

- numbers are JSON numbers (Python `int`/`float`, numpy scalars from the Python API), never
  strings or booleans; they must be finite and representable in float64;
- a label set is a list of distinct integers in `[0, K)`; `num_classes` is an integer >= 1;
- weights are normalised by dividing by their maximum first, so huge weights (1e308) cannot
  overflow the sum;
- sizes are checked against a memory estimate before anything large is allocated
  (`check_memory`), with the estimate in the message;
- `λ_W λ_H` must be a normal positive float64 (`check_lambdas`): `τ² = λ_W λ_H` is what the
  certificate and the closed forms divide by;
- seeds are integers in `[0, 2**63)`.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from .errors import InputError

__all__ = [
    "InputError", "MAX_SEED", "MAX_COUNT", "MIN_CERT_TOL", "check_count", "check_int", "check_number", "check_seed", "check_tol", "check_cert_tol",
    "check_lambdas", "check_num_classes", "check_label_set", "check_weights",
    "normalise_weights", "parse_distribution", "parse_label_matrix", "memory_limit_bytes",
    "check_memory", "format_bytes", "estimate_solve_bytes", "estimate_spectrum_bytes",
    "estimate_distribution_bytes", "check_json_object", "check_has_labels", "check_min_classes",
]

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


# -- memory ------------------------------------------------------------------------------


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB"):
        if n < 1024 or unit == "ZiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} YiB"  # pragma: no cover


def memory_limit_bytes() -> int:
    """Largest allocation estimate accepted: `MLNC_MAX_MEMORY_GB` (GiB) if set, else 80 %
    of physical memory (refusing is better than being killed by the OOM killer)."""
    env = os.environ.get("MLNC_MAX_MEMORY_GB")
    if env:
        try:
            v = float(env)
        except ValueError:
            raise InputError(f"MLNC_MAX_MEMORY_GB must be a number, got {env!r}") from None
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"MLNC_MAX_MEMORY_GB must be > 0, got {env!r}")
        return int(v * 2**30)
    try:
        phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        phys = 16 * 2**30
    return int(0.8 * phys)


def check_memory(nbytes: float, what: str) -> None:
    """Refuse `what` when its estimated memory exceeds the limit (message has the estimate)."""
    limit = memory_limit_bytes()
    if not nbytes <= limit:
        raise InputError(f"{what} would need about {format_bytes(nbytes)} of memory, more than "
                         f"the limit of {format_bytes(limit)} (set MLNC_MAX_MEMORY_GB to change it)")


def estimate_distribution_bytes(num_sets: int, num_classes: int) -> float:
    """The dense `[T, K]` float64 label matrix plus a few same-sized temporaries."""
    return 4.0 * 8 * float(num_sets) * float(num_classes)


def estimate_spectrum_bytes(num_classes: int, num_sets: int,
                            num_multiplicities: Optional[int] = None) -> float:
    """`spectrum_arrays` holds `M_m`, `C_m` `[n, K, K]` and a temporary of the same size
    (`n` multiplicities: those present, or all `K+1`), plus `[K, K]` matrices and the
    `[T, K]` labels."""
    K, T = float(num_classes), float(num_sets)
    n = K + 1 if num_multiplicities is None else float(num_multiplicities)
    return 8 * (3 * n * K * K + 8 * K * K + 4 * T * K)


def estimate_solve_bytes(num_classes: int, num_sets: int, dim: int, batch: int = 1,
                         method: str = "exact") -> float:
    """The Newton engine's working set per problem solved side by side: the labels, the
    loss gradient and curvature and a few CG vectors (`T × K` and `T × d` each), `W`-sized
    blocks and, for the exact path, the per-set `r × r` Cholesky factors (`r = min(d, K)`)."""
    K, T, d, B = float(num_classes), float(num_sets), float(dim), float(batch)
    if method == "exact":
        r = min(K, d)
        return 8 * B * (T * (12 * K + 10 * d + 3 * r * r) + 4 * K * d)
    return 8 * B * (T * (12 * K + 18 * d) + 14 * K * d + 3 * d * d)


# -- label distributions -----------------------------------------------------------------


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


_DIST_KEYS = ("num_classes", "label_sets", "weights")


def parse_distribution(obj) -> "LabelDistribution":  # noqa: F821
    """Distribution JSON `{"num_classes": K, "label_sets": [[...], ...], "weights": [...]}`
    → `LabelDistribution`. Other keys (name, class_names, provenance, description) are
    ignored. Strict about JSON types; the numbers then go through `from_sets`."""
    from .labels import LabelDistribution

    check_json_object(obj, "a label distribution")
    missing = [k for k in _DIST_KEYS if k not in obj]
    if missing:
        raise InputError(f"label distribution JSON lacks key(s): {', '.join(missing)}")
    K = check_num_classes(obj["num_classes"])
    sets, weights = obj["label_sets"], obj["weights"]
    if not isinstance(sets, list):
        raise InputError(f"'label_sets' must be a JSON list, got {type(sets).__name__}")
    if not isinstance(weights, list):
        raise InputError(f"'weights' must be a JSON list, got {type(weights).__name__}")
    for i, s in enumerate(sets):
        if not isinstance(s, list):
            raise InputError(f"label set #{i} must be a list of integers, got {s!r}")
    return LabelDistribution.from_sets(sets, weights, K)


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


def parse_label_matrix(Y) -> "LabelDistribution":  # noqa: F821
    """A binary `[N, K]` label matrix (bool, integer or float 0/1) → its distribution."""
    from .labels import LabelDistribution

    if not isinstance(Y, np.ndarray):
        raise InputError(f"a label matrix must be an array, got {type(Y).__name__}")
    if Y.dtype.kind not in "biuf":
        raise InputError(f"label matrix must hold 0/1 numbers, got dtype {Y.dtype}")
    if Y.ndim != 2 or Y.shape[0] == 0 or Y.shape[1] == 0:
        raise InputError(f"label matrix must be a non-empty [N, K] array, got shape {Y.shape}")
    # np.unique sorts rows (a copy) and from_sets builds [T, K] float64 rows
    check_memory(8.0 * Y.shape[0] * Y.shape[1] + estimate_distribution_bytes(Y.shape[0], Y.shape[1]),
                 f"a [{Y.shape[0]}, {Y.shape[1]}] label matrix")
    return LabelDistribution.from_label_matrix(Y)


def load_label_matrix_file(path) -> "LabelDistribution":  # noqa: F821
    """`.npy` array or `.npz` archive with key `labels`; no pickles."""
    p = str(path)
    try:
        with open(path, "rb"):
            pass
        data = np.load(path, allow_pickle=False, mmap_mode="r" if p.endswith(".npy") else None)
        if p.endswith(".npz"):
            with data as z:
                if "labels" not in z.files:
                    raise InputError(f"{p} has no array 'labels' (found: {', '.join(z.files) or 'none'})")
                Y = z["labels"]
        else:
            Y = data
        if not isinstance(Y, np.ndarray):
            raise InputError(f"{p} does not hold an array")
        if Y.dtype.kind not in "biuf":
            raise InputError(f"label matrix in {p} must hold 0/1 numbers, got dtype {Y.dtype}")
        if Y.ndim == 2:
            check_memory(8.0 * Y.shape[0] * Y.shape[1] + estimate_distribution_bytes(*Y.shape),
                         f"the [{Y.shape[0]}, {Y.shape[1]}] label matrix {p}")
        Y = np.array(Y)  # leave the memory map
    except FileNotFoundError:
        raise InputError(f"no such file: {p}") from None
    except IsADirectoryError:
        raise InputError(f"{p} is a directory, not a label matrix") from None
    except InputError:
        raise
    except (ValueError, OSError, EOFError, KeyError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot read {p} as a label matrix: {msg}") from None
    except Exception as e:  # zipfile.BadZipFile and other format errors of a damaged file
        raise InputError(f"cannot read {p} as a label matrix: {type(e).__name__}") from None
    return parse_label_matrix(Y)


def expect_keys(obj: Mapping, allowed: Iterable[str], what: str) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise InputError(f"unknown key(s) in {what}: {', '.join(map(str, unknown))}")


def check_list(value, name: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise InputError(f"{name} must be a list, got {value!r}")
    return value
