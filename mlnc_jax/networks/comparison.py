"""A trained network's last layer against the certified UFM optimum of its label
distribution (THEORY §2, §7): the samples' label sets, the label-set means of the features,
the objective bound `F_net ≥ F(W, μ, b) ≥ F*_UFM` and the geometry errors (`NetComparison`)."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..measure.compare import relative_error
from ..measure.metrics import nc1
from ..model.errors import InputError
from ..model.labels import LabelDistribution
from ..model.ufm import UFMConfig, UFMParams, objective, per_sample_objective

__all__ = ["NetComparison", "sample_set_index", "label_set_means", "compare_network"]


def sample_set_index(labels, dist: LabelDistribution) -> np.ndarray:
    """Row of `dist` (e.g. `LabelDistribution.from_label_matrix(labels)`) holding each
    sample's label set, `[N]` int."""
    rows = {tuple(np.asarray(r, dtype=np.uint8).tolist()): s
            for s, r in enumerate(np.round(np.asarray(dist.label_sets)).astype(np.uint8))}
    try:
        return np.asarray([rows[tuple(r.tolist())] for r in np.asarray(labels, np.uint8)])
    except KeyError as e:
        raise InputError(f"label set {e.args[0]} of a sample is not in the distribution") from None


def label_set_means(H, set_index, num_sets: int) -> np.ndarray:
    """Mean feature of the samples of each label set, `[T, d]` (zero for an empty set)."""
    H = np.asarray(H, np.float64)
    counts = np.bincount(set_index, minlength=num_sets).astype(np.float64)
    sums = np.zeros((num_sets, H.shape[1]))
    np.add.at(sums, set_index, H)
    return sums / np.maximum(counts, 1.0)[:, None]


def _project_out_ignored(Z, loss):
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


@partial(jax.jit, static_argnames=("config", "num_sets"))
def _jax_terms(W, H, b, mu, label_sets, weights, set_index, config, num_sets):
    """Per-sample objective, reduced objective at the means, NC1 (one compiled program)."""
    f_net = per_sample_objective(UFMParams(W, H, b), label_sets[set_index], config)
    f_mu = objective(UFMParams(W, mu, b), label_sets, weights, config)
    return f_net, f_mu, nc1(H, set_index, num_sets)


def compare_network(H, W, b, set_index, dist: LabelDistribution, ufm, config: UFMConfig) -> NetComparison:
    """Compare per-sample features `H [N, d]` and classifier `(W, b)` with a UFM solution
    `ufm` (fields `W, H, b, objective`) of `dist` under `config` (THEORY §7)."""
    H = np.asarray(H, np.float64)
    W = np.asarray(W, np.float64)
    b = np.asarray(b, np.float64)
    T = dist.num_sets
    mu = label_set_means(H, set_index, T)
    Ws, Hs, bs = (np.asarray(v, np.float64) for v in (ufm.W, ufm.H, ufm.b))
    f_net, f_mu, nc1_value = _jax_terms(jnp.asarray(W), jnp.asarray(H), jnp.asarray(b), jnp.asarray(mu),
                                        jnp.asarray(dist.label_sets), jnp.asarray(dist.weights),
                                        jnp.asarray(set_index), config, T)
    G, Gs = mu @ mu.T, Hs @ Hs.T
    r = np.sqrt(np.asarray(dist.weights))
    unit = lambda A: A / max(np.linalg.norm(A), 1e-300)
    Z, Zs = mu @ W.T + b, Hs @ Ws.T + bs
    Z, Zs = _project_out_ignored(Z, config.loss_record), _project_out_ignored(Zs, config.loss_record)
    return NetComparison(
        net_objective=float(f_net), means_objective=float(f_mu), ufm_objective=float(np.asarray(ufm.objective)),
        gram_h_error=relative_error(G, Gs),
        gram_h_error_scaled=relative_error(unit(G), unit(Gs)),
        gram_h_error_weighted=relative_error(r[:, None] * G * r, r[:, None] * Gs * r),
        gram_w_error=relative_error(W @ W.T, Ws @ Ws.T),
        logit_error=relative_error(Z, Zs),
        nc1=float(nc1_value),
        within_ratio=_within_ratio(H, mu, set_index, dist.weights),
    )


def _within_ratio(H, mu, set_index, weights):
    """`tr Σ_W / tr Σ_B` with `Σ_W`, `Σ_B` as in `metrics.nc1` (per-sample global mean,
    unweighted over present sets)."""
    sw = np.sum((H - mu[set_index]) ** 2) / H.shape[0]
    present = np.asarray(weights) > 0
    sb = np.sum((mu[present] - H.mean(0)) ** 2) / present.sum()
    return float(sw / sb) if sb > 0 else float("inf")


