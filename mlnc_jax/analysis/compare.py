"""Comparing a solution with a prediction by rotation-invariant quantities (THEORY §7).

UFM solutions are unique only up to a rotation of R^d (and inside repeated eigenvalues), so
we compare `W Wᵀ`, the prototype Gram `H Hᵀ`, the logits `W h_s + b`, the bias, the
objective and an orthogonal-Procrustes-aligned `(W, H)`. Relative errors are
`‖A − B‖_F / ‖B‖_F` (absolute when `B = 0`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Comparison", "compare", "procrustes", "relative_error", "as_factors"]


class Comparison(NamedTuple):
    """Relative Frobenius errors of a solution against a reference (THEORY §7)."""

    gram_W: float
    gram_H: float
    logits: float
    bias: float
    objective_gap: float
    W_aligned: float
    H_aligned: float


def relative_error(a, b) -> float:
    """`‖a − b‖_F / ‖b‖_F`, or `‖a − b‖_F` when `b = 0`."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nb = np.linalg.norm(b)
    diff = np.linalg.norm(a - b)
    return float(diff / nb) if nb > 0 else float(diff)


def procrustes(A, B) -> np.ndarray:
    """Orthogonal `Q` minimising `‖A Q − B‖_F` (`A`, `B` of shape `[n, d]`)."""
    U, _, Vt = np.linalg.svd(np.asarray(A).T @ np.asarray(B))
    return U @ Vt


def as_factors(x):
    """`(W, H, b)` as float64 numpy from a SolveResult, ClosedForm or UFMParams."""
    p = getattr(x, "params", x)
    return tuple(np.asarray(v, dtype=np.float64) for v in (p.W, p.H, p.b))


def _pad_cols(A, d):
    return np.pad(A, ((0, 0), (0, d - A.shape[1])))


def compare(solution, reference) -> Comparison:
    """Errors of `solution` (SolveResult / ClosedForm / UFMParams) against `reference`.

    The Procrustes alignment uses one rotation for the stacked `[W; H]`, since a rotation
    of R^d acts on both factors at once.
    """
    W, H, b = as_factors(solution)
    Wr, Hr, br = as_factors(reference)
    gW = W @ W.T
    gH = H @ H.T
    gram_W_ref = getattr(reference, "gram_W", Wr @ Wr.T)
    gram_H_ref = getattr(reference, "gram_H", Hr @ Hr.T)
    logits_ref = getattr(reference, "logits", Hr @ Wr.T + br)
    d = max(W.shape[1], Wr.shape[1])
    A = np.vstack([_pad_cols(W, d), _pad_cols(H, d)])
    B = np.vstack([_pad_cols(Wr, d), _pad_cols(Hr, d)])
    Q = procrustes(A, B)
    K = W.shape[0]
    Aq = A @ Q
    obj = float(np.asarray(solution.objective)) if hasattr(solution, "objective") else np.nan
    obj_ref = float(np.asarray(reference.objective)) if hasattr(reference, "objective") else np.nan
    return Comparison(
        gram_W=relative_error(gW, gram_W_ref),
        gram_H=relative_error(gH, gram_H_ref),
        logits=relative_error(H @ W.T + b, logits_ref),
        bias=relative_error(b, br),
        objective_gap=abs(obj - obj_ref),
        W_aligned=relative_error(Aq[:K], B[:K]),
        H_aligned=relative_error(Aq[K:], B[K:]),
    )
