"""Any trained network's last layer next to the certified UFM optimum of its labels
(THEORY §2, §3, §6, §7, §8): `measure(features, labels, W, b)`.

Inputs are arrays or `io.arrays.ArraySource`s (files read in row blocks); everything is
float64 inside. The empirical label distribution of `labels` is solved at the network's
`λ_W, λ_H` when given, else at the λ's fitted to its geometry (`networks.lambda_fit`), with
the network's loss and bias, in dimension `min(d, K)`: a certified optimum's invariants
(`W Wᵀ`, `H Hᵀ`, logits, objective) are the same in every `d ≥ rank W`, and `rank W ≤ K`.

Reported: NC1 (`tr(Σ_W Σ_B^†)/T'`) and `tr Σ_W / tr Σ_B`, NC2 of `W` and of the singleton
means, NC3, tag-wise angles and the §6 synthesis summary of the label-set means, the
comparison with the optimum (`NetComparison`: label-set-mean Gram raw, scale-free and
π-weighted, `W Wᵀ`, logits, objectives), and per label set the Gram-row, logit and norm
errors, so that the worst-placed sets are named.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..analysis.metrics import nc2_classifier, nc2_features, nc3, singleton_means, tagwise_angles
from ..analysis.synthesis import synthesis_report
from ..engine.solve import solve
from ..io import schema
from ..io.arrays import ArraySource, array_source
from ..model.labels import LabelDistribution
from ..model.ufm import UFMConfig
from .comparison import NetComparison, network_comparison, project_out_ignored
from .lambda_fit import LambdaFit, balance_ratio, fit_lambdas
from .statistics import SampleStatistics, distribution_and_index, sample_statistics

__all__ = ["Measurement", "measure", "per_set_errors", "WORST"]

WORST = 5  # label sets named as the worst placed


class Measurement(NamedTuple):
    """`measure`'s result: the UFM `config` compared with (λ's given or fitted), the empirical
    `distribution` and each sample's row `set_index`, `statistics` (`SampleStatistics`),
    the certified `ufm` (`SolveResult`), `comparison` (`NetComparison`), `metrics` (dict),
    `per_set` (dict of `[T]` arrays), `worst_sets` (list of dicts), `fit` (`LambdaFit` or
    None), `balance` (`λ_W‖W‖² / (λ_H Σπ‖μ_s‖²)` of the network at `config`'s λ's),
    `seconds`."""

    config: UFMConfig
    distribution: LabelDistribution
    set_index: np.ndarray
    statistics: SampleStatistics
    ufm: object
    comparison: NetComparison
    metrics: dict
    per_set: dict
    worst_sets: list
    fit: LambdaFit | None
    balance: float
    seconds: float


def per_set_errors(means, W, b, ufm, config: UFMConfig) -> dict:
    """Per label set `s`: `gram_row_error` `‖G_s − G*_s‖/‖G*_s‖` (`G = μμᵀ`, rotation
    invariant), `logit_error` `‖z_s − z*_s‖/‖z*_s‖` (ignored directions projected out),
    `norm_ratio` `‖μ_s‖/‖h*_s‖`."""
    Hs, Ws, bs = (np.asarray(v, np.float64) for v in (ufm.H, ufm.W, ufm.b))
    rel = lambda a, r: np.linalg.norm(a - r, axis=1) / np.maximum(np.linalg.norm(r, axis=1), 1e-300)
    Z = project_out_ignored(means @ W.T + b, config.loss_record)
    Zs = project_out_ignored(Hs @ Ws.T + bs, config.loss_record)
    return {"gram_row_error": rel(means @ means.T, Hs @ Hs.T), "logit_error": rel(Z, Zs),
            "norm_ratio": np.linalg.norm(means, axis=1) / np.maximum(np.linalg.norm(Hs, axis=1), 1e-300)}


def _metrics(stats: SampleStatistics, W, dist: LabelDistribution, cmp: NetComparison) -> dict:
    """NC1–NC3, tag-wise angles and the §6 synthesis summary of the label-set means."""
    mu, Y, w = stats.means, np.asarray(dist.label_sets), np.asarray(dist.weights)
    M, present = (np.asarray(a) for a in singleton_means(jnp.asarray(mu), Y, w))
    all_single = bool(present.all())
    ang = np.asarray(tagwise_angles(jnp.asarray(mu), Y, w))
    syn = synthesis_report(mu, dist).summary
    has_ang = bool(np.any(np.isfinite(ang)))
    return {"nc1": cmp.nc1, "within_ratio": cmp.within_ratio,
            "nc2_classifier": float(nc2_classifier(jnp.asarray(W))),
            # the singleton means' NC2/NC3 need every class to occur alone
            "nc2_features": float(nc2_features(jnp.asarray(M))) if all_single else None,
            "nc3": float(nc3(jnp.asarray(W), jnp.asarray(M))) if all_single else None,
            "tagwise_angle_mean_deg": float(np.degrees(np.nanmean(ang))) if has_ang else None,
            "tagwise_angle_max_deg": float(np.degrees(np.nanmax(ang))) if has_ang else None,
            "synthesis": syn}


def _worst(per_set: dict, stats: SampleStatistics, dist: LabelDistribution, n: int = WORST) -> list:
    order = np.argsort(-per_set["gram_row_error"], kind="stable")[:n]
    Y = np.asarray(dist.label_sets) > 0.5
    return [{"set": int(s), "labels": np.flatnonzero(Y[s]).tolist(),
             **{k: float(v[s]) for k, v in per_set.items()}, "samples": int(stats.counts[s])}
            for s in order]


def _inputs(features, labels, W, b):
    src = features if isinstance(features, ArraySource) else array_source(features, "features")
    Y, W, b = schema.check_network_arrays(src.shape, src.dtype, labels, W, b)
    return src, Y, W, b


def measure(features, labels, W, b=None, *, lambda_w=None, lambda_h=None, loss="pal",
            lambda_b: float = 0.0, seed: int = 0, tol: float = 1e-10,
            chunk_rows: int | None = None) -> Measurement:
    """Measure a network (features `[N, d]`, binary labels `[N, K]`, classifier `W [K, d]`,
    bias `b [K]` or None for a bias-free classifier) against the certified UFM optimum of
    its label distribution (module docstring). λ's not given are fitted (`fit_lambdas`)."""
    t0 = time.perf_counter()
    src, Y, W, b = _inputs(features, labels, W, b)
    dist, set_index = distribution_and_index(Y)
    K, d = W.shape
    base = UFMConfig(loss, min(d, K), 1.0, 1.0, lambda_b, b is not None).validate()
    bb = np.zeros(K) if b is None else b
    with jax.enable_x64(True):
        stats = sample_statistics(src, set_index, dist, W, bb, base, chunk_rows)
    fit = None
    if lambda_w is None or lambda_h is None:
        fit = fit_lambdas(W, stats.means, dist, base, lambda_w=lambda_w, lambda_h=lambda_h)
        lambda_w, lambda_h = fit.lambda_w, fit.lambda_h
    config = base._replace(lambda_w=lambda_w, lambda_h=lambda_h).validate()
    ufm = solve(dist, config, seed=seed, tol=tol, warn=False)  # its status is reported
    with jax.enable_x64(True):
        cmp = network_comparison(stats, W, bb, dist, ufm, config)
        metrics = _metrics(stats, W, dist, cmp)
    per_set = {"samples": stats.counts, "weight": np.asarray(dist.weights),
               "spread": stats.within_ss / np.maximum(stats.counts, 1.0)
               / np.maximum(np.sum(stats.means**2, 1), 1e-300),
               **per_set_errors(stats.means, W, bb, ufm, config)}
    return Measurement(config, dist, set_index, stats, ufm, cmp, metrics, per_set,
                       _worst(per_set, stats, dist), fit,
                       balance_ratio(W, stats.means, dist.weights, lambda_w, lambda_h),
                       time.perf_counter() - t0)
