"""The file boundary: label matrices on disk, JSON documents (keys, lists), and the checks
of `model.checks` and `model.budget` re-exported for the readers of files and command
lines (`app.cli`, `app.sweep_config`), so one import names every rule.

Every function either returns a checked value or raises `InputError` with a one-line
message that names the offending field; nothing else escapes on bad input. Checked once:
a distribution that passed here is not checked again by the computations it enters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ..model.budget import (
    check_memory,
    estimate_distribution_bytes,
    estimate_solve_bytes,
    estimate_spectrum_bytes,
    format_bytes,
    memory_limit_bytes,
)
from ..model.checks import (
    MAX_COUNT,
    MAX_SEED,
    MIN_CERT_TOL,
    check_cert_tol,
    check_count,
    check_has_labels,
    check_int,
    check_json_object,
    check_label_set,
    check_lambdas,
    check_min_classes,
    check_num_classes,
    check_number,
    check_seed,
    check_tol,
    check_weights,
    normalise_weights,
)
from ..model.errors import InputError
from ..model.labels import LabelDistribution, parse_distribution

__all__ = [
    "InputError", "MAX_SEED", "MAX_COUNT", "MIN_CERT_TOL", "check_count", "check_int",
    "check_number", "check_seed", "check_tol", "check_cert_tol", "check_lambdas",
    "check_num_classes", "check_label_set", "check_weights", "normalise_weights",
    "parse_distribution", "parse_label_matrix", "load_label_matrix_file", "memory_limit_bytes",
    "check_memory", "format_bytes", "estimate_solve_bytes", "estimate_spectrum_bytes",
    "estimate_distribution_bytes", "check_json_object", "check_has_labels", "check_min_classes",
    "expect_keys", "check_network_arrays",
]


def parse_label_matrix(Y) -> LabelDistribution:
    """A binary `[N, K]` label matrix (bool, integer or float 0/1) → its distribution."""
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


def load_label_matrix_file(path) -> LabelDistribution:
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




def _finite_array(a, name: str, shape: tuple) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise InputError(f"{name} must hold numbers, got dtype {a.dtype}")
    if a.shape != shape:
        raise InputError(f"{name} must have shape {list(shape)}, got {list(a.shape)}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} is not finite (NaN or inf entries)")
    return a


def check_network_arrays(features_shape, features_dtype, labels, W, b=None):
    """A network's last layer as `mlnc_jax.measure` takes it: features `[N, d]` (float or
    integer dtype; their finiteness is checked block by block as they are read), binary
    labels `[N, K]`, classifier `W [K, d]` and optional bias `b [K]`, both finite. Returns
    `(labels as uint8, W float64, b float64 or None)`."""
    shape = tuple(features_shape)
    if len(shape) != 2 or 0 in shape:
        raise InputError(f"features must be a non-empty [N, d] array, got shape {list(shape)}")
    if np.dtype(features_dtype).kind not in "fiu":
        raise InputError(f"features must hold numbers, got dtype {features_dtype}")
    N, d = shape
    Y = np.asarray(labels)
    if Y.ndim != 2 or Y.shape[0] != N:
        raise InputError(f"labels must have shape [N, K] with N = {N} (the features' rows), "
                         f"got {list(Y.shape)}")
    if Y.dtype.kind not in "biuf" or not np.all((Y == 0) | (Y == 1)):
        raise InputError("labels must be binary (0/1 entries)")
    K = Y.shape[1]
    W = _finite_array(W, "classifier W", (K, d))
    b = None if b is None else _finite_array(b, "bias b", (K,))
    return Y.astype(np.uint8), W, b
