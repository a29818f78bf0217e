"""What a network's per-sample features contribute to a comparison with the UFM (THEORY §2,
§7), in two streamed passes over the rows: nothing `N × N` and no `N × d` float64 copy.

Pass 1: sample counts and label-set means `μ_s` (float64 sums of float16/32/64 rows).
Pass 2: the within-set sums `Σ_{i∈s} ‖h_i − μ_s‖²`, NC1's `Σ_i ‖(h_i − μ_{S(i)})ᵀ L‖²`
(`Σ_B^† = L Lᵀ`, `measure.metrics.between_set_whitener`; cost `N·d·rank Σ_B`), the loss sum
`Σ_i ℓ(W h_i + b, y_i)` and `Σ_i ‖h_i‖²`: with these the per-sample UFM objective is
`(1/N) Σ_i ℓ_i + λ_W/2 ‖W‖² + λ_H/(2N) Σ_i ‖h_i‖² + λ_b/2 ‖b‖²` (`model.ufm`).

A row block that is not finite is refused, naming its first row.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..analysis.metrics import between_set_whitener
from ..io.arrays import ArraySource, array_source
from ..model.errors import InputError
from ..model.labels import LabelDistribution
from ..model.ufm import UFMConfig, UFMParams, loss_terms

__all__ = ["SampleStatistics", "sample_statistics", "distribution_and_index", "set_rows",
           "chunk_rows_for"]

_CHUNK_BYTES = 64 * 2**20


class SampleStatistics(NamedTuple):
    """Per-label-set summaries of `N` samples (float64 numpy): `counts [T]`, `means [T, d]`,
    `within_ss [T]` (`Σ_{i∈s} ‖h_i − μ_s‖²`), `nc1_ss` (`Σ_i ‖(h_i − μ)ᵀ L‖²`), `nc1_sets`
    (`T'`), `loss_sum` (`Σ_i ℓ_i` at the network's `(W, b)`), `feature_ss` (`Σ_i ‖h_i‖²`)."""

    num_samples: int
    counts: np.ndarray
    means: np.ndarray
    within_ss: np.ndarray
    nc1_ss: float
    nc1_sets: float
    loss_sum: float
    feature_ss: float


def chunk_rows_for(d: int, chunk_rows: int | None = None) -> int:
    """Rows per streamed block: about 64 MB of float64 unless given."""
    return int(chunk_rows) if chunk_rows else max(1, _CHUNK_BYTES // (8 * max(d, 1)))


def set_rows(labels, dist: LabelDistribution) -> np.ndarray:
    """Each sample's row of `dist`, `[N]` int, in one sort (no per-sample Python loop)."""
    rows, inverse = np.unique(np.asarray(labels, np.uint8), axis=0, return_inverse=True)
    where = {tuple(r.tolist()): s for s, r in
             enumerate(np.round(np.asarray(dist.label_sets)).astype(np.uint8))}
    try:
        to_dist = np.asarray([where[tuple(r.tolist())] for r in rows], dtype=np.int64)
    except KeyError as e:
        raise InputError(f"label set {e.args[0]} of a sample is not in the distribution") from None
    return to_dist[np.ravel(inverse)]


def distribution_and_index(labels) -> tuple[LabelDistribution, np.ndarray]:
    """The empirical distribution of a binary `[N, K]` label matrix and each sample's row."""
    dist = LabelDistribution.from_label_matrix(labels)
    return dist, set_rows(labels, dist)


def _blocks(src: ArraySource, rows: int):
    for i in range(0, src.shape[0], rows):
        block = np.asarray(src.rows(i, min(i + rows, src.shape[0])), np.float64)
        if not np.all(np.isfinite(block)):
            bad = i + int(np.flatnonzero(~np.all(np.isfinite(block), axis=1))[0])
            raise InputError(f"{src.name}: row {bad} is not finite")
        yield i, block


@partial(jax.jit, static_argnames=("config",))
def _block_terms(W, Hb, b, Yb, keep, config: UFMConfig):
    """`(Σ ℓ_i, Σ ‖h_i‖²)` over the kept rows of a block (padding rows have `keep = 0`)."""
    losses, _ = loss_terms(UFMParams(W, Hb, b), Yb, keep, config)
    return jnp.sum(keep * losses), jnp.sum(keep * jnp.sum(Hb**2, -1))


def _segment_sums(block, idx, T):
    """`Σ_{i: idx_i = s} block_i` per `s` by one sort and `reduceat` (`np.add.at` is an
    unbuffered loop, ~10× slower on 10⁶ × 4096 rows)."""
    order = np.argsort(idx, kind="stable")
    s_idx = idx[order]
    starts = np.flatnonzero(np.r_[True, s_idx[1:] != s_idx[:-1]])
    out = np.zeros((T, block.shape[1]))
    out[s_idx[starts]] = np.add.reduceat(block[order], starts, axis=0)
    return out


def _pass_means(src, set_index, T, rows):
    sums = np.zeros((T, src.shape[1]))
    for i, block in _blocks(src, rows):
        sums += _segment_sums(block, set_index[i:i + len(block)], T)
    counts = np.bincount(set_index, minlength=T).astype(np.float64)
    return counts, sums / np.maximum(counts, 1.0)[:, None]


def sample_statistics(features, set_index, dist: LabelDistribution, W, b, config: UFMConfig,
                      chunk_rows: int | None = None) -> SampleStatistics:
    """`SampleStatistics` of features (`[N, d]` array or `io.arrays.ArraySource`) whose
    sample `i` has label set `dist.label_sets[set_index[i]]`, at the classifier `(W, b)`."""
    src = features if isinstance(features, ArraySource) else array_source(features, "features")
    set_index = np.asarray(set_index)
    T, rows = dist.num_sets, min(chunk_rows_for(src.shape[1], chunk_rows), max(src.shape[0], 1))
    counts, mu = _pass_means(src, set_index, T, rows)
    L, Tp = between_set_whitener(mu, counts)
    L = L[:, np.any(L != 0, axis=0)]                 # rank Σ_B columns: N·d·r, not N·d²
    Y = np.asarray(dist.label_sets, np.float64)
    Wj, bj = jnp.asarray(W, jnp.float64), jnp.asarray(b, jnp.float64)
    within, nc1_ss, loss_sum, feat_ss = np.zeros(T), 0.0, 0.0, 0.0
    for i, block in _blocks(src, rows):
        idx = set_index[i:i + len(block)]
        R = block - mu[idx]
        within += np.bincount(idx, weights=np.sum(R * R, 1), minlength=T)
        nc1_ss += float(np.sum((R @ L) ** 2))
        pad = rows - len(block)                      # one compiled shape for every block
        keep = np.concatenate([np.ones(len(block)), np.zeros(pad)])
        Hb = np.pad(block, ((0, pad), (0, 0)))
        Yb = np.pad(Y[idx], ((0, pad), (0, 0)))
        l_sum, h_ss = _block_terms(Wj, jnp.asarray(Hb), bj, jnp.asarray(Yb), jnp.asarray(keep), config)
        loss_sum, feat_ss = loss_sum + float(l_sum), feat_ss + float(h_ss)
    return SampleStatistics(int(src.shape[0]), counts, mu, within, nc1_ss, float(Tp),
                            loss_sum, feat_ss)
