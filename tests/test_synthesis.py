"""Synthesis rules (THEORY §4, §6) and geometry stability."""

import math

import jax
import numpy as np
import pytest

from mlnc_jax import solve
from mlnc_jax.analysis.geometry import (
    centred_singular_values,
    contrast_separation,
    geometry_stability,
    min_pair_separation,
)
from mlnc_jax.analysis.synthesis import format_synthesis_summary, synthesis_report
from mlnc_jax.model.labels import LabelDistribution, balanced, random_correlated, singleton_imbalance
from mlnc_jax.model.ufm import UFMConfig
from mlnc_jax.theory.closed_forms import mse_closed_form
from mlnc_jax.theory.spectra import contrast_basis, label_spectrum
from mlnc_jax.theory.symmetric_pal import symmetric_pal

jax.config.update("jax_enable_x64", True)

# the suite's shared padded shape (K = 6, T = 27 rows, d = 8; conftest): one JIT per loss
K5 = 5
K6, K6_ROWS, DIM = 6, 27, 8


@pytest.fixture(scope="module")
def exp_imbalance():
    return singleton_imbalance(K6, 10.0, kind="exponential", multiplicity_mass={1: 0.7, 2: 0.3})


@pytest.mark.parametrize("dist", [singleton_imbalance(K5, 10.0, multiplicity_mass={1: 0.7, 2: 0.3}),
                                  random_correlated(K5, 1, max_multiplicity=3),
                                  balanced(4, {1: 0.4, 2: 0.3, 3: 0.3})])
def test_mse_closed_form_obeys_frequency_rule(dist):
    cf = mse_closed_form(dist, UFMConfig("mse", dist.num_classes, 0.01, 0.01))
    rep = synthesis_report(cf.params.H, dist)
    s = rep.summary
    assert s["num_frequency_rule"] == int(np.sum(dist.multiplicities >= 2))
    assert s["frequency_rule_max"] <= 1e-7
    assert s["tagwise_max"] > 1e-2        # tag-wise averaging does not hold for MSE here
    if s["num_freefit"]:
        assert s["freefit_max"] <= 1e-7
        assert s["mean_coef_error_max"] <= 1e-6 and s["label_coef_deviation_max"] <= 1e-6


def test_mse_no_bias_breaks_frequency_rule():
    d = singleton_imbalance(K5, 10.0, multiplicity_mass={1: 0.7, 2: 0.3})
    cf = mse_closed_form(d, UFMConfig("mse", K5, 0.01, 0.01, bias=False))
    assert synthesis_report(cf.params.H, d).summary["frequency_rule_max"] > 1e-3


def test_mse_solve_obeys_frequency_rule(exp_imbalance):
    res = solve(exp_imbalance.padded(K6_ROWS), UFMConfig("mse", DIM, 0.01, 0.01), seed=0, tol=1e-10)
    H = np.asarray(res.H)[: exp_imbalance.num_sets]
    assert synthesis_report(H, exp_imbalance).summary["frequency_rule_max"] <= 1e-7


def test_pal_imbalance_tagwise_worse_than_freefit(exp_imbalance):
    res = solve(exp_imbalance.padded(K6_ROWS), UFMConfig("pal", DIM, 0.01, 0.01), seed=0, tol=1e-10)
    rep = synthesis_report(np.asarray(res.H)[: exp_imbalance.num_sets], exp_imbalance)
    s = rep.summary
    # PAL prototypes live in Wᵀ1^⊥ (rank K−1 = 5): pair fits (3 columns) are not trivial
    assert s["num_freefit"] == 15 and s["num_freefit_trivial"] == 0 and s["prototype_rank"] == 5
    assert s["tagwise_max"] > 3e-2                      # several percent (THEORY §6)
    assert s["freefit_max"] < 0.1 * s["tagwise_max"]    # free fit much closer
    assert s["frequency_rule_max"] > 3e-2               # the exact MSE rule does not carry over
    assert "free fit" in format_synthesis_summary(rep)


def test_symmetric_pal_is_tagwise():
    d = balanced(K5, {1: 0.3, 2: 0.4, 3: 0.3})
    sp = symmetric_pal(d, UFMConfig("pal", K5, 0.02, 0.02))
    rep = synthesis_report(sp.closed_form.params.H, d)
    assert rep.summary["tagwise_max"] <= 1e-12
    m = d.multiplicities
    np.testing.assert_allclose(rep.tagwise_scale[m == 2], 2 * sp.alpha[2] / sp.alpha[1], rtol=1e-12)
    assert rep.summary["frequency_rule_max"] > 1e-2


def test_missing_singletons_reported_not_raised():
    d = LabelDistribution.from_sets([[0], [1], [0, 1], [1, 2], [0, 2]], [3, 2, 1, 1, 1], 3)
    H = np.random.default_rng(0).normal(size=(5, 4))
    rep = synthesis_report(H, d)
    assert np.isfinite(rep.tagwise_residual[2])
    assert np.isnan(rep.tagwise_residual[3]) and "singleton {2}" in rep.tagwise_reason[3]
    assert np.isnan(rep.frequency_rule_residual[2]) and "singleton {2}" in rep.frequency_rule_reason[2]
    assert np.isnan(rep.freefit_residual[2])
    assert rep.tagwise_reason[0] == "multiplicity < 2"
    assert rep.summary["num_frequency_rule"] == 0 and math.isnan(rep.summary["frequency_rule_max"])
    # all-zero prototypes (collapsed): no rule evaluable, nothing raises
    rep0 = synthesis_report(np.zeros((5, 4)), d)
    assert np.all(np.isnan(rep0.tagwise_residual)) and "collapsed" in rep0.tagwise_reason[2]


# -- geometry --------------------------------------------------------------------------------


def _shrink_matrix(cf, K):
    """B = Σ_j φ_j u_j u_jᵀ of the MSE closed form (free bias), THEORY §4."""
    lam, U = cf.eigenvalues, cf.eigenvectors
    phi = np.clip(1 - 0.01 / np.sqrt(np.clip(lam, 1e-300, None)), 0, None)  # τ = 0.01
    return (U * phi) @ U.T


def test_contrast_separation_vs_kappa_mse():
    # isotropic case: σ_m = φ² κ_m exactly
    d = balanced(K5, {1: 0.3, 2: 0.4, 3: 0.3})
    cf = mse_closed_form(d, UFMConfig("mse", K5, 0.01, 0.01))
    g = geometry_stability(*cf.params, d)
    kap_all = label_spectrum(d).kappa_all
    phi = 1 - 0.01 / math.sqrt(kap_all)
    for m in (1, 2, 3):
        assert g.contrast_separation[m] == pytest.approx(phi**2 * g.kappa[m], rel=1e-10)
    # general case: σ_m ≥ κ_m s_min(P B|1⊥)²
    for d in (random_correlated(K5, 2, max_multiplicity=3),
              singleton_imbalance(K5, 10.0, multiplicity_mass={1: 0.7, 2: 0.3})):
        cf = mse_closed_form(d, UFMConfig("mse", K5, 0.01, 0.01))
        g = geometry_stability(*cf.params, d)
        Q = contrast_basis(K5)
        smin = np.linalg.svd(Q.T @ _shrink_matrix(cf, K5) @ Q, compute_uv=False)[-1]
        for m, sig in g.contrast_separation.items():
            assert sig >= g.kappa[m] * smin**2 * (1 - 1e-10)
            assert sig > 0
    # collapsed solution: no separation
    thr = label_spectrum(d).collapse_threshold["mse"]
    cf0 = mse_closed_form(d, UFMConfig("mse", K5, math.sqrt(1.1 * thr), math.sqrt(1.1 * thr)))
    g0 = geometry_stability(*cf0.params, d)
    assert all(abs(v) < 1e-14 for v in g0.contrast_separation.values())
    assert math.isnan(g0.smallest_singular_value) and g0.rank == 0


def test_centred_singular_values_and_pairs_against_numpy():
    rng = np.random.default_rng(1)
    d = random_correlated(4, 0)
    H = rng.normal(size=(d.num_sets, 6))
    w = np.asarray(d.weights)
    s, smin, rank = centred_singular_values(H, w)
    ref = np.linalg.svd(H - w @ H, compute_uv=False)
    np.testing.assert_allclose(s, ref, rtol=1e-12)
    assert smin == pytest.approx(ref[-1]) and rank == 6
    sw, _, _ = centred_singular_values(H, w, weighted=True)
    np.testing.assert_allclose(sw, np.linalg.svd(np.sqrt(w)[:, None] * (H - w @ H),
                                                 compute_uv=False), rtol=1e-12)
    D = np.linalg.norm(H[:, None] - H[None], axis=-1) + np.diag(np.full(len(H), np.inf))
    assert float(min_pair_separation(H, w)) == pytest.approx(D.min(), rel=1e-12)
    # rank-deficient: the smallest *non-zero* singular value
    H2 = np.outer(rng.normal(size=d.num_sets), rng.normal(size=6))
    s2, smin2, rank2 = centred_singular_values(H2, w)
    assert int(rank2) == 1 and smin2 == pytest.approx(s2[0])


def test_contrast_separation_jit_vmap_padded():
    import jax
    import jax.numpy as jnp

    d1, d2 = random_correlated(4, 0), singleton_imbalance(4, 3.0)
    T = max(d1.num_sets, d2.num_sets)
    rng = np.random.default_rng(2)
    Zs = [rng.normal(size=(T, 4)) for _ in range(2)]
    ds = [d1.padded(T), d2.padded(T)]
    out = jax.jit(jax.vmap(contrast_separation))(
        jnp.asarray(np.stack(Zs)), jnp.asarray(np.stack([d.label_sets for d in ds])),
        jnp.asarray(np.stack([d.weights for d in ds])))
    for i, d in enumerate(ds):
        ref = contrast_separation(Zs[i], np.asarray(d.label_sets), np.asarray(d.weights))
        np.testing.assert_allclose(np.asarray(out.per_multiplicity[i]), ref.per_multiplicity,
                                   rtol=1e-10, equal_nan=True)
        assert float(out.overall[i]) == pytest.approx(float(ref.overall), rel=1e-10)
