"""Where a solve starts: repeated label-set rows merged, and the starting points.

`reduce_rows` merges rows that share a label set (exact for the UFM, THEORY §2: samples
sharing a label set share one feature); `problem_data` builds each problem's host arrays
with its start: the seeded random start (`ufm.init_params`), plus a named one (`STARTS`:
"random" adds nothing, "mse" the MSE closed form of THEORY §4 for the same λ's), or a start
the user gives.
"""

from __future__ import annotations

import jax
import numpy as np

from ..model.errors import InputError
from ..model.labels import LabelDistribution
from ..model.ufm import UFMConfig, UFMParams, init_params
from .placement import ProblemData

__all__ = ["reduce_rows", "random_start", "mse_start", "STARTS", "user_start", "problem_data"]


def reduce_rows(dist: LabelDistribution):
    """Distinct label sets with merged weights normalised to sum to one, and each original
    row's reduced index (-1 for zero-weight rows): exact for the UFM (THEORY §2)."""
    Y = np.asarray(dist.label_sets, dtype=np.float64)
    w = np.asarray(dist.weights, dtype=np.float64)
    if not w.sum() > 0:
        raise InputError("the label distribution has no positive weight")
    w = w / w.sum()  # π = w/Σw (THEORY §1), as the derivatives of THEORY §8 assume
    keep = np.flatnonzero(w > 0)
    uniq, first, inv = np.unique(Y[keep], axis=0, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    if uniq.shape[0] == Y.shape[0]:
        return Y, w, np.arange(Y.shape[0])
    order = np.argsort(first)              # keep the order of first occurrence
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    Yr = Y[keep][first[order]]
    wr = np.zeros(order.size)
    np.add.at(wr, rank[inv], w[keep])
    back = -np.ones(Y.shape[0], dtype=np.int64)
    back[keep] = rank[inv]
    return Yr, wr, back


def random_start(seed: int, K: int, T: int, config: UFMConfig, scale: float):
    p = init_params(jax.random.PRNGKey(seed), K, T, config, scale, np.float64)
    return np.asarray(p.W), np.asarray(p.H), np.asarray(p.b)


def mse_start(Y, w, K, config: UFMConfig, lam):
    from ..theory.closed_forms import mse_closed_form

    dist = LabelDistribution(Y, w, K)
    cf = mse_closed_form(dist, config._replace(loss="mse", lambda_w=float(lam[0]),
                                               lambda_h=float(lam[1]), lambda_b=0.0))
    b = np.zeros(K)
    if config.bias:
        with np.errstate(all="ignore"):
            b0 = np.asarray(config.loss_record.collapse_bias(Y, w), dtype=np.float64)
        b = np.where(np.isfinite(b0), np.clip(b0, -30, 30), 0.0)
    return np.asarray(cf.params.W), np.asarray(cf.params.H), b


def zero_start(Y, w, K, config: UFMConfig, lam):
    return 0.0, 0.0, np.zeros(K)


# the named starting points, added to the seeded random start
STARTS = {"random": zero_start, "mse": mse_start}


def user_start(init, i, B, K, T_full, back, d):
    """Problem `i`'s rows of a user-given start (cast to float64), reduced like the labels."""
    W0, H0, b0 = init[i] if isinstance(init, (list, tuple)) and len(init) == B and not \
        isinstance(init, UFMParams) else (np.asarray(a)[i] for a in init)
    W0, H0, b0 = (np.asarray(a, dtype=np.float64) for a in (W0, H0, b0))
    if W0.shape != (K, d) or b0.shape != (K,) or H0.ndim != 2 or H0.shape[1] != d \
            or H0.shape[0] < T_full:
        raise InputError(f"init for problem {i} must hold W [{K}, {d}], H [{T_full}, {d}], "
                         f"b [{K}]; got {W0.shape}, {H0.shape}, {b0.shape}")
    if not all(np.all(np.isfinite(a)) for a in (W0, H0, b0)):
        raise InputError(f"init for problem {i} has NaN or inf entries")
    n = int(back.max()) + 1
    H = np.zeros((n, d))
    H[back[back >= 0]] = H0[:T_full][back >= 0]
    return W0, H, b0


def problem_data(req, init, init_scale):
    K, d, cfg = req.dists[0].num_classes, req.config.dim, req.config
    probs, backs = [], []
    for i, dist in enumerate(req.dists):
        Y, w, back = reduce_rows(dist)
        if isinstance(init, str) or init is None:
            W0, H0, b0 = random_start(int(req.seeds[i]), K, w.shape[0], cfg, init_scale)
            Wm, Hm, b0 = STARTS[init or "random"](Y, w, K, cfg, req.lam[i])
            W0, H0 = W0 + Wm, H0 + Hm
        else:
            W0, H0, b0 = user_start(init, i, len(req.dists), K, dist.num_sets, back, d)
        if not cfg.bias:
            b0 = np.zeros(K)
        probs.append(ProblemData(Y, w, req.lam[i], W0, H0, b0))
        backs.append(back)
    return probs, backs
