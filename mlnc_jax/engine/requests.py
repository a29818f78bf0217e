"""The Python callers' boundary: `validate` checks everything a solve needs, once, before
any compute (one-line `InputError`s), and returns a `Request` the engine trusts; `batch_grid`
spells out a grid of problems; `is_traced` tells a differentiated call from a plain one."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from ..model import checks
from ..model.errors import InputError
from ..model.labels import LabelDistribution
from ..model.ufm import UFMConfig

__all__ = ["BatchGrid", "batch_grid", "Request", "validate", "is_traced"]


class BatchGrid(NamedTuple):
    """A flattened grid for `solve_batch` (see `batch_grid`).

    `distributions`, `seeds`, `lambda_w`, `lambda_h`: one entry per problem;
    `index[i] = (distribution, lambda_w, lambda_h, seed)` indices of problem `i` in the
    grid axes; `shape` the grid's shape in that order.
    """

    distributions: list
    seeds: np.ndarray
    lambda_w: np.ndarray
    lambda_h: np.ndarray
    index: np.ndarray
    shape: tuple

    def kwargs(self) -> dict:
        """Keyword arguments for `solve_batch(**grid.kwargs(), config=...)`."""
        return dict(distributions=self.distributions, seeds=self.seeds,
                    lambda_w=self.lambda_w, lambda_h=self.lambda_h)


def batch_grid(distributions, lambda_w, lambda_h, seeds=(0,)) -> BatchGrid:
    """Cartesian product distributions × λ_W × λ_H × seeds, flattened in C order."""
    dists = [distributions] if isinstance(distributions, LabelDistribution) else list(distributions)
    lw = np.atleast_1d(np.asarray(lambda_w, dtype=np.float64))
    lh = np.atleast_1d(np.asarray(lambda_h, dtype=np.float64))
    sd = np.atleast_1d(np.asarray(seeds)).astype(np.int64)
    if lw.ndim != 1 or lh.ndim != 1 or sd.ndim != 1:
        raise InputError("lambda_w, lambda_h and seeds must be scalars or 1-d lists")
    shape = (len(dists), lw.size, lh.size, sd.size)
    if min(shape) == 0:
        raise InputError(f"empty grid (sizes {shape})")
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 4)
    return BatchGrid([dists[i] for i in idx[:, 0]], sd[idx[:, 3]], lw[idx[:, 1]], lh[idx[:, 2]],
                     idx, shape)


class Request(NamedTuple):
    dists: list
    config: UFMConfig
    seeds: np.ndarray
    lam: np.ndarray      # [B, 3]
    tol: float
    cert_tol: float


def _per_problem(x, name, default):
    v = np.atleast_1d(np.asarray(default if x is None else x, dtype=object))
    if v.ndim != 1:
        raise InputError(f"{name} must be a scalar or a 1-d list, got shape {v.shape}")
    return list(v)


def _broadcast(columns: dict) -> int:
    sizes = {k: len(v) for k, v in columns.items() if len(v) != 1}
    B = max(sizes.values(), default=1)
    if any(n != B for n in sizes.values()):
        desc = ", ".join(f"{k}: {n}" for k, n in sizes.items())
        raise InputError(f"batch sizes disagree ({desc}); give length 1 or one common length")
    return B


def _check_distribution(dist, config: UFMConfig, i: int) -> None:
    loss = config.loss_record
    Y, w = np.asarray(dist.label_sets), np.asarray(dist.weights)
    msg = loss.domain_error(Y, w)
    if msg is None and config.free_bias:
        msg = loss.minimiser_error(Y, w)
    if msg is not None:
        raise InputError(msg if i < 0 else f"distributions[{i}]: {msg}")


def validate(distributions, config: UFMConfig, seeds, tol, cert_tol, lambda_w=None,
             lambda_h=None, lambda_b=None) -> Request:
    """Check the problems of a solve before any compute (`tol`, `cert_tol` come checked in
    `options.SolveOptions`); raise `InputError` in one line."""
    if not isinstance(config, UFMConfig):
        raise InputError(f"config must be a UFMConfig, got {type(config).__name__}")
    config = config.validate()
    if isinstance(distributions, LabelDistribution):
        distributions = [distributions]
    try:
        dists = list(distributions)
    except TypeError:
        raise InputError("distributions must be a LabelDistribution or a list of them") from None
    if not dists:
        raise InputError("distributions is empty")
    for i, d in enumerate(dists):
        if not isinstance(d, LabelDistribution):
            raise InputError(f"distributions[{i}] is not a LabelDistribution")
        if d.num_classes != dists[0].num_classes:
            raise InputError(f"distributions[{i}] has {d.num_classes} classes, the first has "
                             f"{dists[0].num_classes}")
    sd = [checks.check_seed(s, "seeds") for s in _per_problem(seeds, "seeds", 0)]
    lams = [[checks.check_number(x, n) for x in _per_problem(v, n, getattr(config, n))]
            for n, v in (("lambda_w", lambda_w), ("lambda_h", lambda_h), ("lambda_b", lambda_b))]
    B = _broadcast({"distributions": dists, "seeds": sd, "lambda_w": lams[0],
                    "lambda_h": lams[1], "lambda_b": lams[2]})
    grow = lambda v: list(v) * B if len(v) == 1 else list(v)
    dists, sd = grow(dists), np.asarray([int(s) for s in grow(sd)], dtype=np.int64)
    lam = np.stack([np.asarray(grow(v), dtype=np.float64) for v in lams], -1)
    for lw, lh, lb in {tuple(r) for r in lam.tolist()}:
        config._replace(lambda_w=lw, lambda_h=lh, lambda_b=lb).validate()
    seen = {}
    for i, (d, lb) in enumerate(zip(dists, lam[:, 2])):
        key = (id(d), lb == 0)
        if key not in seen:
            seen[key] = _check_distribution(d, config._replace(lambda_b=float(lb)), i if B > 1 else -1)
    return Request(dists, config, sd, lam, float(tol), float(cert_tol))


def is_traced(*xs) -> bool:
    """Whether any leaf of `xs` is a JAX tracer (inside `grad`, `jit`, `vmap`, ...)."""
    return any(isinstance(l, jax.core.Tracer) for l in jax.tree_util.tree_leaves(xs))


