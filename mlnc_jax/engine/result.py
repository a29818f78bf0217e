"""What a solve found: `SolveResult` and THEORY §2c's verdict on each problem.

* `converged`: every block residual (`engine.newton`) is within `tol`;
* `certified`: converged, the loss is convex and `ρ ≤ 1 + cert_tol` (THEORY §3; at a
  converged point with `W ≠ 0`, `ρ ≥ 1` up to the residual, so this is `|ρ − 1| ≤ cert_tol`
  or the collapsed optimum `W = 0, ρ ≤ 1`): a global minimiser;
* `status`: `"certified"`, `"converged_uncertified"` (with the reason: non-convex loss, `d`
  below the rank of the convex solution, or a saddle), `"not_converged"`, `"diverged"`.
"""

from __future__ import annotations

import enum
import warnings
from typing import Any, NamedTuple

import numpy as np

from ..model.ufm import UFMConfig
from .certificate import rank_diagnosis
from .requests import Request

__all__ = ["Status", "STATUSES", "ConvergenceWarning", "SolveResult", "BatchSolveResult", "verdict",
           "assemble", "warn_uncertified"]


class Status(enum.StrEnum):
    """How a solve ended (THEORY §2c). str-valued: `status == "certified"`, JSON and numpy
    string arrays keep working."""

    CERTIFIED = "certified"
    CONVERGED_UNCERTIFIED = "converged_uncertified"
    NOT_CONVERGED = "not_converged"
    DIVERGED = "diverged"


STATUSES = tuple(s.value for s in Status)


class ConvergenceWarning(RuntimeWarning):
    """Some problems did not converge; the message lists them."""


class SolveResult(NamedTuple):
    """A solve's result (THEORY §2c); from `solve_batch` every field has a leading batch axis.

    `W [K, d]`, `H [T, d]` (rows in the distribution's order; batched: zero rows past each
    problem's `T`, marked by `mask [B, T]`), `b [K]`; `objective`; `grad_norm` (‖∇F‖ in
    `(W, H, b)`); `residual` (the largest relative block residual, the stopping test);
    `certificate` (`ρ` of §3); `converged`, `certified` (bool); `status` (one of `STATUSES`)
    and `reason` (why not certified; "" when certified); `steps` (Newton steps); `seconds`
    (this problem's share of the compute time); `hessian_products` (CG iterations over all
    steps: the engine's cost measure, comparable between devices and paths).
    """

    W: Any
    H: Any
    b: Any
    objective: Any
    grad_norm: Any
    residual: Any
    certificate: Any
    converged: Any
    certified: Any
    status: Any
    reason: Any
    steps: Any
    seconds: Any
    hessian_products: Any
    mask: Any = None

    @property
    def batch_size(self) -> int:
        return int(np.shape(self.objective)[0])

    def item(self, i: int) -> SolveResult:
        """Problem `i` of a batched result, padding rows removed."""
        T = int(np.sum(self.mask[i]))
        pick = [f[i] for f in self[:-1]]
        pick[1] = pick[1][:T]
        return SolveResult(*pick, None)


BatchSolveResult = SolveResult


def verdict(o, config: UFMConfig, lam, tol, cert_tol, max_steps):
    """`(converged, certified, status, reason)` of THEORY §2c for one outcome."""
    if not o.finite:
        return False, False, Status.DIVERGED, "a NaN/inf iterate (check the inputs' scale)"
    if o.residual > tol:
        why = (f"no progress at residual {o.residual:.2e} (tol below round-off for this problem?)"
               if o.stalled else f"max_steps = {max_steps} spent at residual {o.residual:.2e}")
        if o.certificate > 1 + cert_tol:
            diag = rank_diagnosis(o.gram_eigenvalues, lam[0], lam[1], config.dim, cert_tol)
            if diag.startswith("d ="):
                why += "; " + diag
        return False, False, Status.NOT_CONVERGED, why
    if not config.loss_record.convex:
        return True, False, Status.CONVERGED_UNCERTIFIED, \
            "a non-convex loss: the certificate of THEORY §3 does not apply"
    if o.certificate <= 1 + cert_tol:
        return True, True, Status.CERTIFIED, ""
    return True, False, Status.CONVERGED_UNCERTIFIED, \
        f"rho = {o.certificate:.9g} > 1: " + rank_diagnosis(o.gram_eigenvalues, lam[0], lam[1],
                                                              config.dim, cert_tol)


def assemble(outs, backs, req: Request, max_steps) -> SolveResult:
    B, d = len(outs), req.config.dim
    T_max = max(back.shape[0] for back in backs)
    H = np.zeros((B, T_max, d))
    mask = np.zeros((B, T_max), bool)
    for i, (o, back) in enumerate(zip(outs, backs)):
        T = back.shape[0]
        H[i, :T] = np.where((back >= 0)[:, None], o.H[np.maximum(back, 0)], 0.0)
        mask[i, :T] = True
    verdicts = [verdict(o, req.config, req.lam[i], req.tol, req.cert_tol, max_steps)
                for i, o in enumerate(outs)]
    col = lambda name, dtype=np.float64: np.asarray([getattr(o, name) for o in outs], dtype=dtype)
    return SolveResult(
        W=np.stack([o.W for o in outs]), H=H, b=np.stack([o.b for o in outs]),
        objective=col("objective"), grad_norm=col("grad_norm"), residual=col("residual"),
        certificate=col("certificate"), converged=np.asarray([v[0] for v in verdicts]),
        certified=np.asarray([v[1] for v in verdicts]),
        status=np.asarray([v[2].value for v in verdicts]), reason=np.asarray([v[3] for v in verdicts]),
        steps=col("steps", np.int64), seconds=col("seconds"),
        hessian_products=col("cg_iterations", np.int64), mask=mask)


def warn_uncertified(res: SolveResult) -> None:
    bad = np.flatnonzero(~res.certified)
    if bad.size == 0:
        return
    shown = "; ".join(f"{i}: {res.status[i]} ({res.reason[i]})" for i in bad[:5])
    more = f"; and {bad.size - 5} more" if bad.size > 5 else ""
    warnings.warn(f"{bad.size} of {res.batch_size} problems are not certified: {shown}{more} "
                  "(see result.status)", ConvergenceWarning, stacklevel=3)


