"""Continuation in λ: a path of solves, each started from the previous optimum (THEORY §2c).

As regularization vanishes the optimum's norms grow like `log(1/λ)` and the Hessian keeps
directions of curvature only `O(λ)` (the rescalings `W → W A`, `H → H A^{-T}` that the loss
does not see). A cold start must cross them from a random point; the optimum at a nearby
larger λ already sits next to the new one. Measured on `multiclass([10, 10, 1, 1])`, MSE with
a free bias: a cold solve at λ_W = λ_H = 1e-8 certifies in 355 steps, from the certified
optimum at 1e-7 in 1; every decade from 1e-2 down takes 1–11 steps for CE, BCE and MSE on
both that problem and `random_correlated(5, 1)` (`bench/vanishing_regularization.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..model.errors import InputError
from ..model.labels import LabelDistribution
from ..model.ufm import UFMConfig, UFMParams
from .result import SolveResult
from .solve import solve

__all__ = ["solve_path"]


def _configs(config: UFMConfig, lambdas) -> list:
    """One validated config per λ (scalars set both λ's, pairs set `(λ_W, λ_H)`): a bad λ
    anywhere in the path is refused before the first solve."""
    out = []
    for lam in lambdas:
        lw, lh = (lam, lam) if np.ndim(lam) == 0 else tuple(lam)
        out.append(config._replace(lambda_w=lw, lambda_h=lh).validate())
    if not out:
        raise InputError("solve_path: give at least one λ")
    return out


def solve_path(dist: LabelDistribution, config: UFMConfig, lambdas: Sequence, *,
               seed: int = 0, tol: float = 1e-10, **kwargs) -> tuple[SolveResult, ...]:
    """Solve `dist` at each λ of `lambdas` in the order given (scalars set `λ_W = λ_H`,
    pairs set both), starting each solve from the previous converged optimum; the first,
    and any after a solve that did not converge, start as `solve` would (`kwargs`' `init`).
    Order the λ's from large to small. Each result carries its own verdict."""
    init0 = kwargs.pop("init", None)
    init, out = init0, []
    for cfg in _configs(config, lambdas):
        r = solve(dist, cfg, seed, tol, init=init, **kwargs)
        out.append(r)
        init = UFMParams(r.W, r.H, r.b) if bool(r.converged) else init0
    return tuple(out)
