"""A trained network's last layer against the certified UFM optimum of its label
distribution (THEORY §2, §7): the samples' label sets, the label-set means of the features,
the objective bound `F_net ≥ F(W, μ, b) ≥ F*_UFM` and the geometry errors (`NetComparison`)."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ..analysis.compare import relative_error
from ..analysis.metrics import within_between_ratio
from ..model.labels import LabelDistribution
from ..model.ufm import UFMConfig, UFMParams, objective
from .statistics import SampleStatistics, sample_statistics, set_rows

__all__ = ["NetComparison", "sample_set_index", "label_set_means", "network_comparison",
           "project_out_ignored", "compare_network"]


def sample_set_index(labels, dist: LabelDistribution) -> np.ndarray:
    """Row of `dist` (e.g. `LabelDistribution.from_label_matrix(labels)`) holding each
    sample's label set, `[N]` int (`statistics.set_rows`: one sort, no per-sample loop)."""
    return set_rows(labels, dist)


def label_set_means(H, set_index, num_sets: int) -> np.ndarray:
    """Mean feature of the samples of each label set, `[T, d]` (zero for an empty set)."""
    H = np.asarray(H, np.float64)
    counts = np.bincount(set_index, minlength=num_sets).astype(np.float64)
    sums = np.zeros((num_sets, H.shape[1]))
    np.add.at(sums, set_index, H)
    return sums / np.maximum(counts, 1.0)[:, None]


def project_out_ignored(Z, loss):
    """Logits modulo the directions the loss ignores (PAL: `z + c1`), as THEORY §7 compares."""
    V = np.asarray(loss.ignored_directions(Z.shape[-1]))
    return Z - (Z @ V.T) @ V if V.size else Z


class NetComparison(NamedTuple):
    """A trained network against the UFM optimum of its training label distribution.

    Objectives: `net_objective` = `F_net` without `λ_θ/2‖θ‖²` (the per-sample UFM objective at
    the network's features), `means_objective` = the reduced objective at the label-set
    means `μ` with the network's `(W, b)`, `ufm_objective` = `F*`; with `λ_θ = 0`,
    `net ≥ means ≥ ufm`. Relative Frobenius errors (THEORY §7) of the label-set-mean Gram
    `μ μᵀ` against `H* H*ᵀ`: raw (`gram_h_error`), each divided by its Frobenius norm
    (`gram_h_error_scaled`), and π-weighted `D^{1/2} μ μᵀ D^{1/2}`
    (`gram_h_error_weighted`: rare label sets count by their frequency, as in the
    objective); `gram_w_error` (`W Wᵀ`), `logit_error` (logits `W μ_s + b`, rows centred
    for the shift-invariant PAL losses). `nc1` on per-sample features (`metrics.nc1`,
    `tr(Σ_W Σ_B^†)/T'`): it inverts every direction of `Σ_B`, so near-zero between-set
    directions (features in `R^d` with `d` above the rank of the prototypes) can make it
    large even when the samples sit close to their means; `within_ratio` =
    `tr Σ_W / tr Σ_B` (same `Σ_W`, `Σ_B`) is the scale-free summary without that inverse.
    """

    net_objective: float
    means_objective: float
    ufm_objective: float
    gram_h_error: float
    gram_h_error_scaled: float
    gram_h_error_weighted: float
    gram_w_error: float
    logit_error: float
    nc1: float
    within_ratio: float


def _objectives(stats: SampleStatistics, W, b, dist, config):
    """`(F_net, F(W, μ, b))`: the per-sample objective from the streamed sums (`model.ufm`:
    the λ_W, λ_b terms from `objective` at no rows) and the reduced one at the means."""
    Wj, bj = jnp.asarray(W), jnp.asarray(b)
    no_rows = jnp.zeros((0, Wj.shape[1]))
    penalty = objective(UFMParams(Wj, no_rows, bj), jnp.zeros((0, Wj.shape[0])), jnp.zeros(0), config)
    n = stats.num_samples
    f_net = stats.loss_sum / n + 0.5 * config.lambda_h * stats.feature_ss / n + float(penalty)
    f_mu = objective(UFMParams(Wj, jnp.asarray(stats.means), bj), jnp.asarray(dist.label_sets),
                     jnp.asarray(dist.weights), config)
    return float(f_net), float(f_mu)


def network_comparison(stats: SampleStatistics, W, b, dist: LabelDistribution, ufm,
                       config: UFMConfig) -> NetComparison:
    """`NetComparison` from the streamed `SampleStatistics` of the features (THEORY §7)."""
    W, b = np.asarray(W, np.float64), np.asarray(b, np.float64)
    mu = stats.means
    Ws, Hs, bs = (np.asarray(v, np.float64) for v in (ufm.W, ufm.H, ufm.b))
    f_net, f_mu = _objectives(stats, W, b, dist, config)
    G, Gs = mu @ mu.T, Hs @ Hs.T
    r = np.sqrt(np.asarray(dist.weights))
    unit = lambda A: A / max(np.linalg.norm(A), 1e-300)
    Z, Zs = mu @ W.T + b, Hs @ Ws.T + bs
    Z, Zs = project_out_ignored(Z, config.loss_record), project_out_ignored(Zs, config.loss_record)
    return NetComparison(
        net_objective=f_net, means_objective=f_mu, ufm_objective=float(np.asarray(ufm.objective)),
        gram_h_error=relative_error(G, Gs),
        gram_h_error_scaled=relative_error(unit(G), unit(Gs)),
        gram_h_error_weighted=relative_error(r[:, None] * G * r, r[:, None] * Gs * r),
        gram_w_error=relative_error(W @ W.T, Ws @ Ws.T),
        logit_error=relative_error(Z, Zs),
        nc1=stats.nc1_ss / (stats.num_samples * stats.nc1_sets),
        within_ratio=float(within_between_ratio(np.sum(stats.within_ss), mu, stats.counts)),
    )


def compare_network(H, W, b, set_index, dist: LabelDistribution, ufm, config: UFMConfig,
                    chunk_rows: int | None = None) -> NetComparison:
    """Compare per-sample features `H [N, d]` and classifier `(W, b)` with a UFM solution
    `ufm` (fields `W, H, b, objective`) of `dist` under `config` (THEORY §7). The features
    are summarised in streamed blocks (`networks.statistics`); `mlnc_jax.measure` is the
    same comparison from files."""
    stats = sample_statistics(H, set_index, dist, W, b, config, chunk_rows)
    return network_comparison(stats, W, b, dist, ufm, config)
