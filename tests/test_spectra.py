"""Label spectra (THEORY §1) and collapse thresholds (THEORY §3) against solves."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlnc_jax as mj
from mlnc_jax import solve
from mlnc_jax.model.errors import InputError
from mlnc_jax.model.labels import LabelDistribution, balanced, random_correlated, singleton_imbalance
from mlnc_jax.model.ufm import UFMConfig
from mlnc_jax.theory.spectra import (
    contrast_basis,
    format_spectrum_table,
    label_spectrum,
    spectrum_arrays,
    spectrum_to_json,
)
from mlnc_jax.theory.thresholds import collapse_threshold

jax.config.update("jax_enable_x64", True)

# every solve uses the suite's shared padded shape (K = 6, T = 27 rows, d = 8; conftest):
# one compiled solver per loss for the whole test-suite
K6, K6_ROWS, DIM = 6, 27, 8


def _real_labels_dir():
    here = Path(__file__).resolve()
    for base in (here.parents[2] / "shared", here.parents[1] / "shared",
                 here.parents[1].parent / "shared"):
        d = base / "data" / "real-labels"
        if d.is_dir():
            return d
    return None


def test_contrast_basis_is_orthonormal_basis_of_contrasts():
    for K in (2, 3, 6):
        Q = contrast_basis(K)
        assert Q.shape == (K, K - 1)
        np.testing.assert_allclose(Q.T @ Q, np.eye(K - 1), atol=1e-14)
        np.testing.assert_allclose(Q @ Q.T, np.eye(K) - 1.0 / K, atol=1e-14)


@pytest.mark.parametrize("K", [4, 5])
def test_check_values_all_subsets_uniform(K):
    """§1 check value: all m-subsets equally likely → κ_m = m(K−m)/(K(K−1)), δ_m = 0."""
    mass = {m: 1.0 for m in range(1, K + 1)}
    spec = label_spectrum(balanced(K, mass))
    assert spec.multiplicities == tuple(range(1, K + 1))
    for m in range(1, K):
        kap = m * (K - m) / (K * (K - 1))
        assert spec.kappa[m] == pytest.approx(kap, rel=1e-12, abs=1e-15)
        np.testing.assert_allclose(spec.spectrum[m], kap, rtol=1e-12)
        assert spec.isotropy_defect[m] == pytest.approx(0.0, abs=1e-12)
        np.testing.assert_allclose(spec.conditional_covariance[m],
                                   kap * (np.eye(K) - 1.0 / K), atol=1e-14)
    # m = K: a single label set, C_K = 0 → defect absent, κ_K = 0
    assert spec.isotropy_defect[K] is None
    assert spec.kappa[K] == pytest.approx(0.0, abs=1e-14)


def test_defect_detects_anisotropy_and_absent_slices():
    d = LabelDistribution.from_sets([[0], [1], [2], [0, 1], [2, 3]], [1, 1, 1, 2, 1], 4)
    spec = label_spectrum(d)
    assert spec.isotropy_defect[1] > 0.1          # class 3 never alone: anisotropic
    assert spec.kappa[1] == pytest.approx(0.0, abs=1e-14)  # u ∝ (1,1,1,−3): constant on m = 1
    assert spec.kappa[2] == pytest.approx(0.0, abs=1e-14)  # two sets: C_2 has rank 1 < K−1
    d1 = LabelDistribution.from_sets([[0], [1], [0, 1, 2]], [1, 1, 1], 3)
    spec1 = label_spectrum(d1)
    assert spec1.isotropy_defect[3] is None       # one set of size 3: C_3 = 0
    assert spec1.isotropy_defect[1] is not None
    js = spectrum_to_json(spec1)
    assert js["isotropy_defect"]["3"] is None


def test_empty_set_and_pal_normalized_threshold():
    d = LabelDistribution.from_sets([[], [0], [1], [0, 1]], [1, 1, 1, 1], 2)
    spec = label_spectrum(d)
    assert spec.multiplicities == (0, 1, 2)
    assert spec.collapse_threshold["pal_normalized"] is None
    assert spec.isotropy_defect[0] is None and spec.isotropy_defect[2] is None
    with pytest.raises(InputError):
        label_spectrum(LabelDistribution.from_sets([[0]], [1], 1))


def test_spectrum_to_json_exact_layout():
    spec = label_spectrum(balanced(4, {1: 0.5, 2: 0.5}))
    js = spectrum_to_json(spec)
    assert list(js) == ["num_classes", "class_frequencies", "mean_multiplicity",
                        "multiplicity_mass", "kappa", "kappa_all", "isotropy_defect",
                        "spectrum", "collapse_threshold"]
    assert js["num_classes"] == 4
    assert set(js["multiplicity_mass"]) == {"1", "2"}
    assert js["kappa"]["1"] == pytest.approx(0.25) and js["kappa"]["2"] == pytest.approx(1 / 3)
    assert js["kappa_all"] == pytest.approx(0.5 * 0.25 + 0.5 * 1 / 3)
    assert len(js["spectrum"]["2"]) == 3
    assert set(js["collapse_threshold"]) == {"pal", "pal_normalized", "bce", "mse"}
    assert js["collapse_threshold"]["pal"] == pytest.approx(7 / 24)
    assert js["collapse_threshold"]["pal_normalized"] == pytest.approx(1 / 6)
    json.dumps(js)  # serialisable
    table = format_spectrum_table(spec)
    assert "kappa_m" in table and "pal_normalized" in table


def _per_sample_thresholds(Y):
    """THEORY §3 collapse thresholds from a per-sample label matrix, in plain numpy:
    `λ_max((1/N) Σ_i g⁰_i g⁰_iᵀ)` with `g⁰ = p − y` (mse, bce), `(m/m̄) p − y` (pal),
    `E[y/m] − y/m` (pal_normalized)."""
    Y = Y.astype(np.float64)
    N = Y.shape[0]
    p = Y.mean(0)
    m = Y.sum(1)
    G = {"mse": p - Y, "bce": p - Y, "pal": np.outer(m / p.sum(), p) - Y,
         "pal_normalized": (Y / m[:, None]).mean(0) - Y / m[:, None]}
    return {k: float(np.linalg.eigvalsh(g.T @ g / N)[-1]) for k, g in G.items()}


def test_thresholds_match_an_independent_per_sample_computation():
    # counts 1..T on the support of a random distribution, expanded to one row per sample
    d0 = random_correlated(5, 3)
    counts = np.arange(1, d0.num_sets + 1)
    d = LabelDistribution.from_sets(d0.sets, counts, 5)
    Y = np.repeat(np.asarray(d.label_sets), counts, axis=0)
    want = _per_sample_thresholds(Y)
    spec = label_spectrum(d)
    for loss, v in want.items():
        assert spec.collapse_threshold[loss] == pytest.approx(v, rel=1e-12), loss
        assert collapse_threshold(d, loss) == pytest.approx(v, rel=1e-12), loss
    # check value (THEORY §1): all 2-subsets of K = 5 equally likely, C = m(K−m)/(K(K−1)) P
    bal = balanced(5, {2: 1.0})
    assert label_spectrum(bal).collapse_threshold["mse"] == pytest.approx(2 * 3 / 20, rel=1e-12)


def _numpy_spectra(Y):
    """Independent per-sample numpy computation of p, C, C_m and their spectra on 1^⊥."""
    Y = Y.astype(np.float64)
    N, K = Y.shape
    P = np.eye(K) - 1.0 / K
    p = Y.mean(0)
    C = (Y - p).T @ (Y - p) / N
    eig_all = np.sort(np.linalg.eigvalsh(P @ C @ P))
    eig_all = np.delete(eig_all, np.argmin(np.abs(eig_all)))  # drop the eigenvector 1
    out = {}
    m = Y.sum(1).astype(int)
    for mm in np.unique(m):
        Ym = Y[m == mm]
        pm = Ym.mean(0)
        Cm = (Ym - pm).T @ (Ym - pm) / len(Ym)
        e = np.sort(np.linalg.eigvalsh(Cm))
        e = np.delete(e, np.argmin(np.abs(e)))
        nC = np.linalg.norm(Cm)
        delta = np.linalg.norm(Cm - np.trace(Cm) / (K - 1) * P) / nC if nC > 1e-12 else None
        out[int(mm)] = (len(Ym) / N, e, delta)
    return p, eig_all, out


def test_real_label_matrix_against_numpy():
    d = _real_labels_dir()
    if d is None or not (d / "emotions_labels.npy").exists():
        pytest.skip("shared/data/real-labels not found")
    Y = np.load(d / "emotions_labels.npy")
    spec = label_spectrum(LabelDistribution.from_label_matrix(Y))
    p, eig_all, per_m = _numpy_spectra(Y)
    np.testing.assert_allclose(spec.class_frequencies, p, rtol=1e-12)
    np.testing.assert_allclose(spec.spectrum_all, eig_all, atol=1e-12)
    assert spec.kappa_all == pytest.approx(eig_all[0], abs=1e-12)
    assert spec.mean_multiplicity == pytest.approx(Y.sum(1).mean(), rel=1e-12)
    assert set(spec.multiplicities) == set(per_m)
    for m, (mass, e, delta) in per_m.items():
        assert spec.multiplicity_mass[m] == pytest.approx(mass, rel=1e-12)
        np.testing.assert_allclose(spec.spectrum[m], e, atol=1e-12)
        assert spec.kappa[m] == pytest.approx(e[0], abs=1e-12)
        if delta is None:
            assert spec.isotropy_defect[m] is None
        else:
            assert spec.isotropy_defect[m] == pytest.approx(delta, rel=1e-9)


def test_vmap_over_padded_batch_matches_individual():
    dists = [balanced(4, {1: 0.5, 2: 0.5}), singleton_imbalance(4, 5.0),
             random_correlated(4, 0), LabelDistribution.from_sets([[0], [1, 2, 3]], [1, 3], 4),
             balanced(4, {1: 1, 2: 1, 3: 1, 4: 1})]
    T = max(d.num_sets for d in dists)
    Y = jnp.stack([jnp.asarray(d.padded(T).label_sets) for d in dists])
    w = jnp.stack([jnp.asarray(d.padded(T).weights) for d in dists])
    batched = jax.jit(jax.vmap(spectrum_arrays))(Y, w)
    for i, d in enumerate(dists):
        single = spectrum_arrays(np.asarray(d.label_sets), np.asarray(d.weights))  # numpy path
        for name, a, b in zip(single._fields, batched, single):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), atol=1e-13,
                                       equal_nan=True, err_msg=name)
        spec = label_spectrum(d)
        for m in spec.multiplicities:
            assert float(batched.kappa[i, m]) == pytest.approx(spec.kappa[m], abs=1e-13)
    # absent multiplicities are NaN, present ones finite
    assert np.isnan(np.asarray(batched.kappa[0, 3])) and np.isfinite(np.asarray(batched.kappa[0, 2]))


# -- §3 thresholds against solves -------------------------------------------------------------


@pytest.fixture(scope="module")
def imbalanced6():
    return singleton_imbalance(K6, 3.0, multiplicity_mass={1: 0.6, 2: 0.4})


@pytest.mark.parametrize("loss", ["pal", "mse"])
def test_collapse_threshold_against_solve(imbalanced6, loss):
    thr = label_spectrum(imbalanced6).collapse_threshold[loss]
    d = imbalanced6.padded(K6_ROWS)
    norms = {}
    for f in (0.9, 1.1):
        lam = math.sqrt(f * thr)
        res = solve(d, UFMConfig(loss, DIM, lam, lam), seed=0, tol=1e-10)
        assert bool(res.converged)
        norms[f] = float(jnp.linalg.norm(res.W))
        if f > 1:
            assert float(res.certificate) <= 1.0 + 1e-8
    assert norms[1.1] < 1e-6, norms          # above the threshold: collapse W = 0
    assert norms[0.9] > 1e-2, norms          # below: W clearly non-zero


def test_present_multiplicities_only_equal_the_full_arrays():
    """`spectrum_arrays(..., multiplicities=ms)` (the host path of `label_spectrum`, which
    fits K ≈ 1,000) equals the `[K+1]`-row arrays at those rows."""
    from mlnc_jax.theory.spectra import spectrum_arrays

    dist = mj.random_correlated(7, seed=2, max_multiplicity=3)
    Y, w = np.asarray(dist.label_sets, float), np.asarray(dist.weights, float)
    full = spectrum_arrays(Y, w)
    ms = [3, 1, 2]
    part = spectrum_arrays(Y, w, multiplicities=ms)
    for name in ("conditional_frequencies", "conditional_second_moment",
                 "conditional_covariance", "spectrum", "kappa", "isotropy_defect"):
        np.testing.assert_allclose(getattr(part, name), getattr(full, name)[ms], rtol=1e-12,
                                   atol=1e-15, err_msg=name)


def test_delicious_label_spectrum_fits():
    """K = 983: only the multiplicities present are formed (the `[K+1, K, K]` arrays would
    need 23 GB)."""
    spec = mj.label_spectrum(mj.load_real("delicious"))
    assert spec.num_classes == 983 and len(spec.multiplicities) < 40
    assert all(np.isfinite(v) for v in spec.kappa.values())
    np.testing.assert_allclose(sum(spec.multiplicity_mass.values()), 1.0, rtol=1e-12)
