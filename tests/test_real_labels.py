"""Real multi-label label matrices (shared/data/real-labels): MSE closed form vs solver,
and the PAL certificate at the solver's solution."""

from __future__ import annotations

import numpy as np
import pytest

from mlnc_jax.model.labels import LabelDistribution
from mlnc_jax.model.ufm import UFMConfig
from mlnc_jax.theory.closed_forms import closed_form

DIM = 8
LW, LH = 5e-3, 1e-2
K6_ROWS = 27  # K = 6 distributions are padded to 27 rows to share compiled solvers (conftest)
NAMES = ["emotions", "scene"]  # both K = 6: 27 and 15 distinct label sets


def rel_fro(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def load(real_dir, name):
    path = real_dir / f"{name}_labels.npy"
    if not path.exists():
        pytest.skip(f"{path} not found")
    Y = np.load(path)
    dist = LabelDistribution.from_label_matrix(Y)
    return Y, dist


@pytest.mark.parametrize("name", NAMES)
def test_real_label_distribution(real_dir, name):
    Y, dist = load(real_dir, name)
    assert Y.ndim == 2 and Y.dtype == np.uint8 and set(np.unique(Y)) <= {0, 1}
    assert dist.num_classes == Y.shape[1] == 6
    rows = {tuple(r) for r in Y.tolist()}
    assert dist.num_sets == len(rows) <= K6_ROWS
    assert float(np.sum(dist.weights)) == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(dist.class_frequencies, Y.mean(0), atol=1e-14)
    # weights are the row counts / N
    counts = {r: 0 for r in rows}
    for r in Y.tolist():
        counts[tuple(r)] += 1
    for y, w in zip(np.asarray(dist.label_sets), dist.weights):
        assert w * Y.shape[0] == pytest.approx(counts[tuple(int(v) for v in y)], rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_real_labels_mse_matches_closed_form(real_dir, solve_cached, name):
    _, dist = load(real_dir, name)
    dist = dist.padded(K6_ROWS)
    T = int(np.sum(np.asarray(dist.weights) > 0))
    cfg = UFMConfig("mse", DIM, LW, LH)  # free bias
    cf = closed_form(dist, cfg)
    res = solve_cached(dist, cfg)
    assert bool(res.converged)
    W, H, b = np.asarray(res.W), np.asarray(res.H)[:T], np.asarray(res.b)
    assert rel_fro(W @ W.T, cf.gram_W) <= 1e-7
    assert rel_fro(H @ H.T, cf.gram_H[:T, :T]) <= 1e-7
    assert rel_fro(H @ W.T + b, cf.logits[:T]) <= 1e-7
    assert abs(float(res.objective) - cf.objective) <= 1e-10
    assert abs(float(res.certificate) - 1.0) <= 1e-6
    np.testing.assert_allclose(b, dist.class_frequencies, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_real_labels_pal_certificate(real_dir, solve_cached, name):
    _, dist = load(real_dir, name)
    dist = dist.padded(K6_ROWS)
    cfg = UFMConfig("pal", DIM, LW, LH)
    res = solve_cached(dist, cfg)
    assert bool(res.converged) and float(res.grad_norm) <= 1e-10
    assert float(np.linalg.norm(res.W)) > 1e-2
    assert abs(float(res.certificate) - 1.0) <= 1e-6
