"""MSE spectral closed form (THEORY §4) against the solver, and the F* formula.

Tolerances from the issue: Gram W = W Wᵀ, prototype Gram H Hᵀ and logits W h_s + b within
1e-7 relative Frobenius error of the closed form; objective within 1e-10 absolute.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from mlnc_jax.model import labels as L
from mlnc_jax.model.errors import InputError
from mlnc_jax.model.ufm import UFMConfig, UFMParams, objective
from mlnc_jax.theory.closed_forms import closed_form, mse_closed_form

LW, LH = 3e-3, 2e-2  # λ_W ≠ λ_H so that a swapped √(λ_H/λ_W) cannot go unnoticed
DIM = 8
K6_ROWS = 27  # K = 6 distributions are padded to 27 rows to share compiled solvers (conftest)

DISTS = {
    # unpadded
    "rc4_m3_s1": lambda: L.random_correlated(4, 1, max_multiplicity=3),
    "rc7_m2_s4": lambda: L.random_correlated(7, 4, max_multiplicity=2),
    # K = 6, padded with zero-weight rows
    "rc6_m2_s3": lambda: L.random_correlated(6, 3, max_multiplicity=2).padded(K6_ROWS),
    "si6_step": lambda: L.singleton_imbalance(6, 10.0, kind="step").padded(K6_ROWS),
    "si6_exp": lambda: L.singleton_imbalance(6, 20.0, kind="exponential",
                                             multiplicity_mass={1: 0.6, 2: 0.4}).padded(K6_ROWS),
}

CASES = [("rc4_m3_s1", True), ("rc7_m2_s4", False), ("rc6_m2_s3", True), ("rc6_m2_s3", False),
         ("si6_step", True), ("si6_step", False), ("si6_exp", True)]


def support_rows(dist):
    """Number of leading rows with positive weight (padding rows come last)."""
    return int(np.sum(np.asarray(dist.weights) > 0))


def rel_fro(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def numerical_rank(A, rtol=1e-6):
    s = np.linalg.svd(np.asarray(A), compute_uv=False)
    return int(np.sum(s > rtol * s[0])) if s[0] > 0 else 0


def sigma_of(dist, bias):
    """Σ of THEORY §4: C = M − ppᵀ (free bias) or M (no bias), computed independently."""
    Y = np.asarray(dist.label_sets, np.float64)
    w = np.asarray(dist.weights, np.float64)
    Mm = (Y * w[:, None]).T @ Y
    p = w @ Y
    return Mm - np.outer(p, p) if bias else Mm


def theory_fstar(lam, tau, dim):
    """F* of THEORY §4 with the top-`dim` active directions kept (the rest count λ_j/2)."""
    lam = np.sort(np.clip(lam, 0, None))[::-1]
    act = np.flatnonzero(lam > tau**2)[:dim]
    return float(sum(tau * math.sqrt(l) - tau**2 / 2 if j in act else l / 2
                     for j, l in enumerate(lam)))


def check_against_closed_form(res, cf, T):
    W, H, b = np.asarray(res.W), np.asarray(res.H), np.asarray(res.b)
    errs = {
        "gram_W": rel_fro(W @ W.T, cf.gram_W),
        "gram_H": rel_fro(H[:T] @ H[:T].T, cf.gram_H[:T, :T]),
        "logits": rel_fro(H[:T] @ W.T + b, cf.logits[:T]),
        "objective": abs(float(res.objective) - cf.objective),
    }
    assert errs["gram_W"] <= 1e-7, errs
    assert errs["gram_H"] <= 1e-7, errs
    assert errs["logits"] <= 1e-7, errs
    assert errs["objective"] <= 1e-10, errs
    return errs


@pytest.fixture(scope="module")
def mse_solutions(solve_cached):
    def get(name, bias):
        dist = DISTS[name]()
        cfg = UFMConfig("mse", DIM, LW, LH, 0.0, bias)
        return dist, cfg, closed_form(dist, cfg), solve_cached(dist, cfg)

    return get


@pytest.mark.parametrize("name,bias", CASES)
def test_mse_solver_matches_closed_form(mse_solutions, name, bias):
    dist, cfg, cf, res = mse_solutions(name, bias)
    assert bool(res.converged) and float(res.grad_norm) <= 1e-10
    T = support_rows(dist)
    check_against_closed_form(res, cf, T)
    # padding rows (zero weight) carry no feature
    assert np.all(np.asarray(res.H)[T:] == 0.0)
    # bias: b = p with a free bias, b = 0 without (THEORY §4)
    want_b = dist.class_frequencies if bias else np.zeros(dist.num_classes)
    assert np.max(np.abs(np.asarray(res.b) - want_b)) <= 1e-7
    np.testing.assert_allclose(cf.b, want_b, atol=1e-15)
    # here all directions with λ_j > τ² fit in d = 8 ≥ K
    lam = np.linalg.eigvalsh(sigma_of(dist, bias))
    assert cf.rank == int(np.sum(lam > cfg.lambda_w * cfg.lambda_h))
    assert numerical_rank(res.W) == cf.rank


@pytest.mark.parametrize("name,bias", CASES)
def test_fstar_formula(mse_solutions, name, bias):
    dist, cfg, cf, res = mse_solutions(name, bias)
    tau = math.sqrt(LW * LH)
    lam = np.linalg.eigvalsh(sigma_of(dist, bias))
    np.testing.assert_allclose(np.sort(cf.eigenvalues), lam, atol=1e-14)
    # F* of THEORY §4 from an independent eigendecomposition
    assert cf.objective == pytest.approx(theory_fstar(lam, tau, DIM), abs=1e-14)
    # ... equals the UFM objective at the closed-form factors ...
    p = UFMParams(*(jnp.asarray(a) for a in cf.params))
    F_params = float(objective(p, jnp.asarray(dist.label_sets), jnp.asarray(dist.weights), cfg))
    assert abs(F_params - cf.objective) <= 1e-12
    # ... and F at the solver's solution
    assert abs(float(res.objective) - cf.objective) <= 1e-10


@pytest.mark.parametrize("name,bias", [("rc7_m2_s4", True), ("si6_step", False),
                                       ("rc4_m3_s1", True)])
def test_closed_form_matches_theory_formulas(name, bias):
    """W Wᵀ, H Hᵀ, logits of THEORY §4 rebuilt from the eigenpairs of Σ (no solver)."""
    dist = DISTS[name]()
    cfg = UFMConfig("mse", DIM, LW, LH, 0.0, bias)
    cf = closed_form(dist, cfg)
    Y = np.asarray(dist.label_sets)
    p = dist.class_frequencies
    Yt = Y - p if bias else Y
    lam, U = np.linalg.eigh(sigma_of(dist, bias))
    tau = math.sqrt(LW * LH)
    act = lam > tau**2
    s = np.where(act, np.sqrt(np.clip(lam, 0, None)) - tau, 0.0)
    phi = np.where(act, 1 - tau / np.sqrt(np.where(act, lam, 1.0)), 0.0)
    lam_safe = np.where(act, lam, 1.0)
    gW = math.sqrt(LH / LW) * (U * s) @ U.T
    proj = Yt @ U
    gH = math.sqrt(LW / LH) * (proj * (s / lam_safe)) @ proj.T
    Z = (proj * phi) @ U.T + (p if bias else 0.0)
    assert rel_fro(cf.gram_W, gW) <= 1e-12
    assert rel_fro(cf.gram_H, gH) <= 1e-12
    assert rel_fro(cf.logits, Z) <= 1e-12
    # the factor realisation reproduces the invariants
    W, H, b = (np.asarray(a) for a in cf.params)
    assert W.shape == (dist.num_classes, DIM) and H.shape == (dist.num_sets, DIM)
    assert rel_fro(W @ W.T, gW) <= 1e-12
    assert rel_fro(H @ H.T, gH) <= 1e-12
    assert rel_fro(H @ W.T + b, Z) <= 1e-12


@pytest.mark.parametrize("name", ["rc4_m3_s1", "si6_step", "rc7_m2_s4"])
def test_frequency_weighted_synthesis(name):
    """h_S = Σ_{k∈S} h_k − (|S| − 1)/(m̄ − 1) Σ_j p_j h_j (THEORY §4, free bias)."""
    dist = DISTS[name]()
    cf = closed_form(dist, UFMConfig("mse", DIM, LW, LH))
    H = np.asarray(cf.params.H)
    p = dist.class_frequencies
    mbar = p.sum()
    single = dist.singleton_index()
    hk = np.stack([H[single[k]] for k in range(dist.num_classes)])
    centre = p @ hk
    for s, S in enumerate(dist.sets):
        pred = hk[S].sum(0) - (len(S) - 1) / (mbar - 1) * centre
        assert np.linalg.norm(H[s] - pred) <= 1e-10 * np.linalg.norm(H)


# -- inactive directions: λ_Wλ_H between covariance eigenvalues ---------------------------------


def _inactive_case():
    dist = L.random_correlated(6, 5, max_multiplicity=2).padded(K6_ROWS)
    lam = np.sort(np.linalg.eigvalsh(sigma_of(dist, True)))[::-1]
    # τ² at the geometric mean of the best-separated pair λ_(r) > λ_(r+1), 2 ≤ r ≤ K − 2:
    # r active directions, K − r inactive ones
    r = max(range(2, 5), key=lambda j: lam[j - 1] / lam[j])
    tau2 = math.sqrt(lam[r - 1] * lam[r])
    assert lam[r - 1] > 1.2 * tau2 and lam[r] < tau2 / 1.2, lam  # well separated
    tau = math.sqrt(tau2)
    cfg = UFMConfig("mse", DIM, 2.0 * tau, tau / 2.0, 0.0, True)
    return dist, cfg, lam, r


def test_inactive_directions(solve_cached):
    dist, cfg, lam, r = _inactive_case()
    cf = closed_form(dist, cfg)
    assert cf.rank == r < dist.num_classes
    np.testing.assert_allclose(np.sort(cf.eigenvalues)[::-1], lam, atol=1e-14)
    assert numerical_rank(cf.gram_W, 1e-12) == r
    res = solve_cached(dist, cfg)
    check_against_closed_form(res, cf, support_rows(dist))
    assert numerical_rank(res.W) == r
    assert numerical_rank(np.asarray(res.H)) == r
    # inactive eigenvalues count λ_j/2 in F*
    assert cf.objective == pytest.approx(theory_fstar(lam, cfg.tau, DIM), abs=1e-14)
    # columns of W span the active eigenspace of C (THEORY §3: G Gᵀ W = λ_Wλ_H W)
    U = cf.eigenvectors[:, np.argsort(cf.eigenvalues)[::-1][:r]]
    W = np.asarray(res.W)
    assert np.linalg.norm(W - U @ (U.T @ W)) <= 1e-7 * np.linalg.norm(W)


def test_dim_smaller_than_active_directions_keeps_top_d(solve_cached):
    dist = L.random_correlated(6, 6, max_multiplicity=2).padded(K6_ROWS)
    cfg = UFMConfig("mse", 2, LW, LH, 0.0, False)
    lam = np.sort(np.linalg.eigvalsh(sigma_of(dist, False)))[::-1]
    n_active = int(np.sum(lam > LW * LH))
    assert n_active > 2
    assert lam[1] > 1.05 * lam[2]  # the top-2 subspace is well defined
    cf = closed_form(dist, cfg)
    assert cf.rank == 2
    # top-d kept: W Wᵀ lives on the two leading eigenvectors
    U2 = cf.eigenvectors[:, np.argsort(cf.eigenvalues)[::-1][:2]]
    assert np.linalg.norm(cf.gram_W - U2 @ U2.T @ cf.gram_W @ U2 @ U2.T) <= 1e-12 * np.linalg.norm(
        cf.gram_W)
    assert cf.objective == pytest.approx(theory_fstar(lam, cfg.tau, 2), abs=1e-14)
    # the d-truncated optimum is worse than the untruncated one
    assert cf.objective > closed_form(dist, cfg._replace(dim=DIM)).objective + 1e-6
    res = solve_cached(dist, cfg)
    check_against_closed_form(res, cf, support_rows(dist))
    assert numerical_rank(res.W) == 2
    p = UFMParams(*(jnp.asarray(a) for a in cf.params))
    F_params = float(objective(p, jnp.asarray(dist.label_sets), jnp.asarray(dist.weights), cfg))
    assert abs(F_params - cf.objective) <= 1e-12


def test_closed_form_masks_padding_rows():
    d = L.random_correlated(6, 3, max_multiplicity=2)
    cfg = UFMConfig("mse", DIM, LW, LH)
    cf = closed_form(d, cfg)
    cfp = closed_form(d.padded(K6_ROWS), cfg)
    T = d.num_sets
    assert cfp.objective == pytest.approx(cf.objective, abs=1e-15)
    np.testing.assert_allclose(cfp.gram_W, cf.gram_W, atol=1e-15)
    np.testing.assert_allclose(cfp.gram_H[:T, :T], cf.gram_H, atol=1e-15)
    np.testing.assert_array_equal(np.asarray(cfp.params.H)[T:], 0.0)
    np.testing.assert_array_equal(cfp.gram_H[T:], 0.0)


# -- bad input ------------------------------------------------------------------------------


def test_closed_form_bad_input():
    dist = DISTS["rc4_m3_s1"]()
    with pytest.raises(InputError, match="no closed form for loss 'pal'"):
        closed_form(dist, UFMConfig("pal", 4, 1e-2, 1e-2))
    with pytest.raises(InputError, match="bce"):
        closed_form(dist, UFMConfig("bce", 4, 1e-2, 1e-2))
    with pytest.raises(InputError, match="lambda_b"):
        mse_closed_form(dist, UFMConfig("mse", 4, 1e-2, 1e-2, 0.1, True))
    with pytest.raises(InputError, match="dim"):
        closed_form(dist, UFMConfig("mse", 0, 1e-2, 1e-2))
    with pytest.raises(InputError, match="lambda_h"):
        closed_form(dist, UFMConfig("mse", 4, 1e-2, -1e-2))
