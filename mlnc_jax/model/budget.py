"""Memory estimates checked before anything large is allocated: refusing with the estimate
in the message is better than being killed by the OOM killer."""

from __future__ import annotations

import math
import os

from .errors import InputError


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
                            num_multiplicities: int | None = None) -> float:
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


