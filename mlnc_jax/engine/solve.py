"""`solve`: one problem, the entry point users call.

A plain call is `solve_batch([dist], config, seeds=[seed]).item(0)` (`engine.batch`); under
`jax.grad`/`jacfwd`/`jacrev`/`vmap` (weights or the config's λ's are tracers) the certified
optimum is returned with derivatives through it (`engine.implicit`, THEORY §8).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..model.errors import InputError
from ..model.labels import LabelDistribution
from ..model.ufm import UFMConfig
from .batch import solve_batch_with
from .implicit import traced_solve
from .options import SolveOptions
from .requests import is_traced
from .result import SolveResult, warn_uncertified

__all__ = ["solve"]


def solve(dist: LabelDistribution, config: UFMConfig, seed: int = 0, tol: float = 1e-10, *,
          init=None, init_scale: float = 0.1, max_steps: int = 500, max_cg: int = 1024,
          cert_tol: float = 1e-6, progress: bool | None = False,
          devices: Sequence | None = None, warn: bool = True,
          method: str = "auto") -> SolveResult:
    """Solve one reduced UFM problem (THEORY §2): `solve_batch([dist], ...).item(0)`.

    Under `jax.grad`/`jacfwd`/`jacrev`/`vmap` (weights or the config's λ's are tracers) it
    returns the certified optimum with derivatives (`engine.implicit.traced_solve`).

    `init` is None/"random", "mse" or `UFMParams(W [K, d], H [T, d], b [K])` (any float
    dtype; cast to float64). See `solve_batch` for the other arguments.
    """
    if not isinstance(dist, LabelDistribution):
        raise InputError(f"dist must be a LabelDistribution, got {type(dist).__name__}")
    opts = SolveOptions(tol=tol, cert_tol=cert_tol, max_steps=max_steps, max_cg=max_cg,
                        method=method, init_scale=init_scale, devices=devices,
                        progress=progress, warn=False)
    if is_traced(dist, config):  # inside jax.grad / jacfwd / jacrev / vmap: THEORY §8
        return traced_solve(dist, config, opts.validated(), seed, init=init)
    if init is not None and not isinstance(init, str):
        if not (isinstance(init, tuple) and len(init) == 3):
            raise InputError("init must be None, 'random', 'mse' or UFMParams(W, H, b)")
        init = [tuple(init)]
    res = solve_batch_with([dist], config, opts, seeds=[seed], init=init)
    out = res.item(0)
    if warn:
        warn_uncertified(res)
    return out
