"""Symmetric PAL / PAL-N closed form (THEORY §5) against the solver."""

import itertools
import math

import jax
import numpy as np
import pytest

from mlnc_jax import solve
from mlnc_jax.model.errors import InputError
from mlnc_jax.model.labels import LabelDistribution, balanced, singleton_imbalance
from mlnc_jax.model.ufm import UFMConfig
from mlnc_jax.theory.closed_forms import ClosedForm, closed_form
from mlnc_jax.theory.symmetric_pal import (
    is_symmetric,
    symmetric_collapse_threshold,
    symmetric_pal,
    symmetric_pal_closed_form,
    symmetric_pal_scalar_objective,
)
from mlnc_jax.theory.thresholds import collapse_threshold

jax.config.update("jax_enable_x64", True)

# the suite's shared padded shape (K = 6, T = 27 rows, d = 8; conftest): one JIT per loss
K6, K6_ROWS, DIM = 6, 27, 8


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def _ufm_objective(params, dist, config):
    """THEORY §2 reduced objective in plain numpy (pal / pal_normalized), independent of
    `mlnc_jax.model.ufm`."""
    W, H, b = (np.asarray(x, dtype=np.float64) for x in params)
    Y, w = np.asarray(dist.label_sets), np.asarray(dist.weights)
    z = H @ W.T + b
    zmax = z.max(1)
    lse = zmax + np.log(np.exp(z - zmax[:, None]).sum(1))
    m = Y.sum(1)
    yz = (Y * z).sum(1)
    loss = m * lse - yz if config.loss == "pal" else lse - yz / np.where(m > 0, m, 1)
    return float(w @ loss + 0.5 * config.lambda_w * np.sum(W**2)
                 + 0.5 * config.lambda_h * w @ np.sum(H**2, 1))


def _check_against_solve(dist, config):
    sp = symmetric_pal(dist, config)
    cf = sp.closed_form
    res = solve(dist, config, seed=0, tol=1e-10)
    assert bool(res.converged)
    F = float(res.objective)
    assert abs(cf.objective - F) <= 1e-9 * abs(F)
    W, H = np.asarray(res.W), np.asarray(res.H)
    if sp.collapsed:
        assert np.linalg.norm(W) < 1e-6 and np.linalg.norm(H) < 1e-6
    else:
        assert _rel(W @ W.T, cf.gram_W) <= 1e-6
        assert _rel(H @ H.T, cf.gram_H) <= 1e-6
        assert _rel(H @ W.T + np.asarray(res.b), cf.logits) <= 1e-6
    return sp


def test_symmetric_pal_three_multiplicities_matches_solve():
    d = balanced(K6, {1: 0.3, 2: 0.4, 5: 0.3})        # 6 + 15 + 6 = 27 sets
    assert d.num_sets == K6_ROWS
    sp = _check_against_solve(d, UFMConfig("pal", DIM, 0.02, 0.02))
    assert not sp.collapsed and sp.rho > 0
    assert sp.alpha[1] > sp.alpha[2] > sp.alpha[5] > 0


def test_symmetric_pal_collapsed_matches_solve():
    d = balanced(K6, {1: 0.5, 2: 0.5})
    thr = collapse_threshold(d, "pal")
    lam = math.sqrt(1.1 * thr)
    sp = _check_against_solve(d.padded(K6_ROWS), UFMConfig("pal", DIM, lam, lam))
    assert sp.collapsed and sp.rho == 0.0 and sp.closed_form.rank == 0
    assert sp.objective == pytest.approx(0.5 * 1 * math.log(K6) + 0.5 * 2 * math.log(K6))


def test_symmetric_pal_normalized_matches_solve():
    d = balanced(K6, {1: 0.5, 2: 0.3, 6: 0.2}).padded(K6_ROWS)   # m = K: h_S = 0
    sp = _check_against_solve(d, UFMConfig("pal_normalized", DIM, 0.02, 0.02))
    assert not sp.collapsed and sp.alpha[6] == 0.0


def test_realisation_structure_and_ufm_objective():
    d = balanced(4, {1: 0.4, 2: 0.3, 4: 0.3})
    cfg = UFMConfig("pal", 6, 0.04, 0.05)
    sp = symmetric_pal(d, cfg)
    cf = sp.closed_form
    W, H, b = (np.asarray(x) for x in cf.params)
    assert W.shape == (4, 6) and H.shape == (d.num_sets, 6) and np.all(b == 0)
    np.testing.assert_allclose(np.sum(W**2, 1), sp.rho, rtol=1e-12)      # ‖w_k‖² = ρ
    np.testing.assert_allclose(W @ W.T, cf.gram_W, atol=1e-12)
    np.testing.assert_allclose(W @ W.T, sp.rho * 4 / 3 * (np.eye(4) - 0.25), atol=1e-12)
    np.testing.assert_allclose(H @ H.T, cf.gram_H, atol=1e-12)
    np.testing.assert_allclose(H @ W.T, cf.logits, atol=1e-12)
    np.testing.assert_allclose(H[d.multiplicities == 4], 0.0, atol=1e-14)  # m = K: h_S = 0
    assert sp.alpha[4] == 0.0
    # the scalar objective of §5 is the UFM objective of the realisation
    assert cf.objective == pytest.approx(_ufm_objective(cf.params, d, cfg), rel=1e-13)
    # stationarity of the scalar problem: perturbing (ρ, α) never lowers it
    masses = {1: 0.4, 2: 0.3, 4: 0.3}
    f0 = symmetric_pal_scalar_objective(sp.rho, sp.alpha, masses, 4, "pal", 0.04, 0.05)
    assert f0 == pytest.approx(cf.objective, rel=1e-14)
    for dr, da in [(1e-4, 0), (-1e-4, 0), (0, 1e-4), (0, -1e-4)]:
        al = {m: a + da for m, a in sp.alpha.items()}
        assert symmetric_pal_scalar_objective(sp.rho + dr, al, masses, 4, "pal", 0.04, 0.05) >= f0


def test_scalar_objective_equals_ufm_objective_anywhere():
    d = balanced(4, {1: 0.5, 2: 0.2, 3: 0.3})
    masses = {1: 0.5, 2: 0.2, 3: 0.3}
    rng = np.random.default_rng(0)
    from mlnc_jax.theory.spectra import contrast_basis
    for loss in ("pal", "pal_normalized"):
        cfg = UFMConfig(loss, 3, 0.07, 0.02)
        for _ in range(3):
            rho = float(rng.uniform(0.1, 3))
            alpha = {m: float(rng.normal()) for m in masses}
            W = math.sqrt(rho * 4 / 3) * contrast_basis(4)
            H = np.array([alpha[int(m)] for m in d.multiplicities])[:, None] * (d.label_sets @ W)
            F = _ufm_objective((W, H, np.zeros(4)), d, cfg)
            assert symmetric_pal_scalar_objective(rho, alpha, masses, 4, loss, 0.07, 0.02) == \
                pytest.approx(F, rel=1e-13)


def test_threshold_matches_certificate():
    for loss in ("pal", "pal_normalized"):
        for mass in ({1: 1.0}, {1: 0.5, 2: 0.5}, {1: 0.2, 2: 0.3, 3: 0.5}):
            d = balanced(5, mass)
            assert symmetric_collapse_threshold(mass, 5, loss) == \
                pytest.approx(collapse_threshold(d, loss), rel=1e-12)
            # just below / above the threshold the scalar solve switches to / from collapse
            thr = symmetric_collapse_threshold(mass, 5, loss)
            lo = symmetric_pal(d, UFMConfig(loss, 5, math.sqrt(0.99 * thr), math.sqrt(0.99 * thr)))
            hi = symmetric_pal(d, UFMConfig(loss, 5, math.sqrt(1.01 * thr), math.sqrt(1.01 * thr)))
            assert not lo.collapsed and lo.rho > 0 and hi.collapsed


def test_bias_is_zero_for_any_bias_setting():
    d = balanced(4, {1: 0.5, 2: 0.5})
    for kw in ({"bias": False}, {"lambda_b": 0.3}, {}):
        cf = symmetric_pal_closed_form(d, UFMConfig("pal", 3, 0.05, 0.05, **kw))
        assert np.all(cf.b == 0)


def test_is_symmetric_and_refusals():
    assert is_symmetric(balanced(4, {1: 0.5, 2: 0.5})) == (True, "symmetric")
    sets = [(k,) for k in range(4)] + list(itertools.combinations(range(4), 2))[:5]
    d = LabelDistribution.from_sets(sets, [1.0] * len(sets), 4)
    ok, why = is_symmetric(d)
    assert not ok and why == "multiplicity 2 has 5 of 6 subsets"
    with pytest.raises(InputError, match="not symmetric: multiplicity 2 has 5 of 6 subsets"):
        symmetric_pal(d, UFMConfig("pal", 4, 0.05, 0.05))
    imb = singleton_imbalance(4, 3.0)
    ok, why = is_symmetric(imb)
    assert not ok and why.startswith("unequal weights within multiplicity 1")
    with pytest.raises(InputError, match="unequal weights within multiplicity 1"):
        closed_form(imb, UFMConfig("pal", 4, 0.05, 0.05))
    with pytest.raises(InputError, match="dim >= K-1"):
        symmetric_pal(balanced(4, {1: 1.0}), UFMConfig("pal", 2, 0.05, 0.05))
    with pytest.raises(InputError, match="pal"):
        symmetric_pal(balanced(4, {1: 1.0}), UFMConfig("bce", 4, 0.05, 0.05))
    with pytest.raises(InputError, match="empty label set"):
        symmetric_pal(balanced(3, {0: 0.2, 1: 0.8}), UFMConfig("pal_normalized", 3, 0.05, 0.05))
    # error messages are one line
    with pytest.raises(InputError) as e:
        symmetric_pal(d, UFMConfig("pal", 4, 0.05, 0.05))
    assert "\n" not in str(e.value) and str(e.value).strip()


def test_closed_form_dispatch_returns_closed_form():
    d = balanced(4, {1: 0.5, 2: 0.5})
    cf = closed_form(d, UFMConfig("pal_normalized", 4, 0.05, 0.05))
    assert isinstance(cf, ClosedForm) and cf.rank == 3
    np.testing.assert_allclose(cf.eigenvalues[1:], collapse_threshold(d, "pal_normalized"),
                               rtol=1e-12)
