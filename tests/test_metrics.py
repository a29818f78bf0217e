"""NC metrics following Li et al. (2024), THEORY §7."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlnc_jax.analysis.metrics import (
    nc1,
    nc2_classifier,
    nc2_features,
    nc3,
    nc_metrics,
    singleton_means,
    tagwise_angles,
    weighted_mean,
)
from mlnc_jax.model.labels import LabelDistribution, balanced, sample_labels, singleton_imbalance
from mlnc_jax.model.ufm import UFMConfig
from mlnc_jax.theory.spectra import contrast_basis
from mlnc_jax.theory.symmetric_pal import symmetric_pal

jax.config.update("jax_enable_x64", True)


def _random_rotation(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


@pytest.fixture(scope="module")
def sym():
    d = balanced(4, {1: 0.4, 2: 0.3, 3: 0.3})
    sp = symmetric_pal(d, UFMConfig("pal", 5, 0.05, 0.05))
    R = _random_rotation(5, 0)
    W, H, _ = sp.closed_form.params
    return d, np.asarray(W) @ R, np.asarray(H) @ R


def test_symmetric_pal_solution_has_zero_nc_metrics(sym):
    d, W, H = sym
    m = jax.jit(nc_metrics)(W, H, d.label_sets, d.weights)
    assert float(m.nc2_W) < 1e-12 and float(m.nc2_H) < 1e-12 and float(m.nc3) < 1e-12
    assert float(m.tagwise_angle_max) < 1e-6     # arccos near 1 resolves ~1e-8
    # every global-mean choice agrees here (both means are 0)
    M, present = jax.jit(singleton_means)(H, d.label_sets, d.weights)
    assert bool(jnp.all(present))
    mu = jax.jit(weighted_mean)(H, d.weights)
    np.testing.assert_allclose(np.asarray(mu), 0.0, atol=1e-13)
    assert float(jax.jit(nc3)(W, M, center=mu)) < 1e-12


def test_nc2_nc3_detect_deviations():
    K, dim = 4, 5
    etf = math.sqrt(2.0) * contrast_basis(K) @ _random_rotation(K - 1, 1)[:, :]
    W = np.pad(etf, ((0, 0), (0, dim - (K - 1)))) @ _random_rotation(dim, 2)
    assert float(nc2_classifier(3.7 * W)) < 1e-12               # scale and rotation invariant
    Wb = W.copy()
    Wb[0] *= 1.5                                                # one longer classifier
    assert float(nc2_classifier(Wb)) > 0.05
    assert float(nc2_features(W + 10.0)) < 1e-12                # centred: offset removed
    assert float(nc2_features(W + 10.0, center=np.zeros(dim))) > 0.5
    assert float(nc3(W, 2.0 * W)) < 1e-12
    assert float(nc3(W, -W)) == pytest.approx(2.0, rel=1e-12)   # opposite directions
    rng = np.random.default_rng(3)
    assert float(nc3(W, rng.normal(size=W.shape))) > 0.3


def test_nc1_per_sample_against_numpy():
    d = singleton_imbalance(4, 3.0)
    Y, idx = sample_labels(d, 400, seed=0)
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(d.num_sets, 6))
    f = jax.jit(nc1, static_argnames="num_sets")
    assert float(f(protos[idx], idx, num_sets=d.num_sets)) < 1e-20   # exact NC1
    vals = []
    for s in (0.01, 0.1):
        X = protos[idx] + s * rng.normal(size=(len(idx), 6))
        v = float(f(X, idx, num_sets=d.num_sets))
        # numpy reference
        present = np.unique(idx)
        mu = np.stack([X[idx == t].mean(0) if t in present else np.zeros(6)
                       for t in range(d.num_sets)])
        muG = X.mean(0)
        Sw = (X - mu[idx]).T @ (X - mu[idx]) / len(X)
        D = mu[present] - muG
        Sb = D.T @ D / len(present)
        ref = np.trace(Sw @ np.linalg.pinv(Sb)) / len(present)
        assert v == pytest.approx(ref, rel=1e-8)
        vals.append(v)
    assert vals[1] > 50 * vals[0] > 0                           # grows like noise²


def test_tagwise_angles_definition_and_nan_rows():
    d = LabelDistribution.from_sets([[0], [1], [2], [0, 1], [1, 3], [0, 1, 2]], [1] * 6, 4)
    rng = np.random.default_rng(4)
    H = rng.normal(size=(6, 3))
    ang = np.asarray(jax.jit(tagwise_angles)(H, d.label_sets, d.weights))
    assert np.all(np.isnan(ang[:3]))          # singletons
    assert np.isnan(ang[4])                   # {3} not in the support
    v = (H[0] + H[1]) / 2
    ref = math.acos(H[3] @ v / np.linalg.norm(H[3]) / np.linalg.norm(v))
    assert ang[3] == pytest.approx(ref, rel=1e-12)
    # centring by a given mean
    mu = weighted_mean(H, d.weights)
    angc = np.asarray(jax.jit(tagwise_angles)(H, d.label_sets, d.weights, center=mu))
    vc = (H[0] + H[1] + H[2]) / 3 - np.asarray(mu)
    hc = H[5] - np.asarray(mu)
    assert angc[5] == pytest.approx(math.acos(hc @ vc / np.linalg.norm(hc) / np.linalg.norm(vc)),
                                    rel=1e-12)
    # exact tag-wise averaging → angle 0 (up to arccos resolution)
    H2 = H.copy()
    H2[3] = 0.7 * (H[0] + H[1])
    assert np.asarray(jax.jit(tagwise_angles)(H2, d.label_sets, d.weights))[3] < 1e-6


def test_metrics_vmap_over_solutions(sym):
    d, W, H = sym
    Ws = jnp.stack([W, 2 * W, W + 0.1])
    Hs = jnp.stack([H, H, H])
    out = jax.jit(jax.vmap(nc_metrics, in_axes=(0, 0, None, None)))(Ws, Hs, d.label_sets, d.weights)
    assert float(out.nc2_W[1]) < 1e-12 and float(out.nc2_W[2]) > 1e-3
