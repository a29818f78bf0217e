"""Imbalanced multi-class CE: SELI (Thrampoulidis et al. 2022), minority collapse (Fang et al.
2021) and its sharp threshold (Hong & Ling 2023) against certified solves."""

import jax
import numpy as np
import pytest

import mlnc_jax as mj
from mlnc_jax.theory.imbalance import (
    minority_collapse_ratio,
    minority_collapse_weight,
    minority_spread,
    seli_distance,
    seli_gram,
)

jax.config.update("jax_enable_x64", True)

STEP = [(10, 10, 1, 1), (5, 1, 1)]


def _solve(counts, lw, lh, bias, tol=1e-10):
    K = len(counts)
    return mj.solve(mj.multiclass(np.asarray(counts, dtype=np.float64)),
                    mj.UFMConfig("ce", K, lw, lh, bias=bias), tol=tol)


def _certified(counts, lw, lh, bias, tol=1e-10):
    r = _solve(counts, lw, lh, bias, tol)
    assert r.certified, (counts, lw, bias, r.status, r.reason)
    return r


def test_seli_is_the_svd_of_the_simplex_encoded_labels():
    # Thm. 1's identities: W H = Ẑ and the Grams are the square roots of Ẑ Ẑᵀ, Ẑᵀ Ẑ;
    # a per-class W, H of SELI exists with H Wᵀ = P, so (H Wᵀ)(W Hᵀ) = H (WWᵀ) Hᵀ.
    n = np.array([7.0, 3.0, 1.0, 1.0])
    g = seli_gram(n)
    P = np.eye(4) - 0.25
    WWt = g["WWt"] / np.linalg.norm(g["WWt"])
    HHt = g["HHt"]
    D = np.diag(n)
    A = WWt @ WWt
    np.testing.assert_allclose(A / np.linalg.norm(A), P @ D @ P / np.linalg.norm(P @ D @ P),
                               atol=1e-12)
    # Hᵀ per sample: (Ẑᵀ Ẑ)^{1/2} restricted to class blocks is D^{1/2}·HHt·D^{1/2} up to scale
    B = np.diag(np.sqrt(n)) @ HHt @ np.diag(np.sqrt(n))
    C = np.diag(np.sqrt(n)) @ P @ np.diag(np.sqrt(n))
    np.testing.assert_allclose((B @ B) / np.linalg.norm(B @ B), C / np.linalg.norm(C),
                               atol=1e-12)


@pytest.mark.parametrize("K", [3, 4, 5])
@pytest.mark.parametrize("bias", [False, True])
def test_seli_balanced_is_the_etf_at_every_lambda(K, bias):
    # equal counts: SELI is the simplex ETF, and the regularised optimum is exactly it
    r = _certified([4.0] * K, 1e-2, 1e-2, bias)
    d = seli_distance(r.W, r.H, [4.0] * K)
    assert max(d.values()) < 1e-8, d


@pytest.mark.parametrize("counts", STEP)
def test_seli_is_the_vanishing_regularisation_limit_without_bias(counts):
    # Thm. 1 + ridge path: the normalised optimum tends to SELI as λ → 0; the distance falls
    # strictly with every decade of λ down to 1e-8, like c/log(1/λ) (Thrampoulidis et al.'s
    # rate is logarithmic): c rises towards its limit, within [0.3, 1] (measured on
    # (10,10,1,1): 0.117 → 0.035, c = 0.54 → 0.65)
    lams = [10.0 ** -e for e in range(2, 9)]
    dist = []
    for lam in lams:
        r = _certified(counts, lam, lam, False)
        dist.append(seli_distance(r.W, r.H, counts))
    for key in ("WWt", "HHt", "logits"):
        seq = [d[key] for d in dist]
        assert all(b < a for a, b in zip(seq, seq[1:])), (key, seq)
    c = [d["WWt"] * np.log(1 / lam) for d, lam in zip(dist, lams)]
    assert all(b >= a for a, b in zip(c, c[1:])) and 0.3 <= c[0] and c[-1] <= 1.0, c


def test_free_bias_limit_is_not_seli():
    # SELI is the bias-free statement: a free bias absorbs part of the margins, and the
    # distance to SELI grows as λ falls instead of vanishing (measured 0.199 → 0.220 at 1e-8)
    counts = STEP[0]
    seq = []
    for lam in (1e-2, 1e-4, 1e-6, 1e-8):
        r = _certified(counts, lam, lam, True)
        seq.append(seli_distance(r.W, r.H, counts)["WWt"])
    assert all(b > a for a, b in zip(seq, seq[1:])) and seq[0] > 0.1, seq


@pytest.mark.parametrize("bias", [False, True])
def test_fang_minority_spread_falls_with_imbalance(bias):
    # Fang et al. Thm. 5: minority classifiers merge as n_A/n_B grows; at λ = 1e-3 the sharp
    # threshold is R* ≈ 5·10⁵, so here the merge is gradual and strictly monotone
    lam = 1e-3
    assert minority_collapse_ratio(2, 2, lam, lam) > 1e5
    seq = [minority_spread(_certified((R, R, 1, 1), lam, lam, bias).W, [2, 3])
           for R in (1, 2, 5, 10, 20, 50, 100, 1000)]
    assert all(b < a for a, b in zip(seq, seq[1:])) and seq[-1] > 1e-2, seq


CASES = [(2, 2, 0.1, 0.1, False), (2, 2, 0.1, 0.1, True), (3, 3, 0.2, 0.05, False),
         (1, 3, 0.15, 0.15, True), (2, 2, 0.08, 0.08, False)]


@pytest.mark.parametrize("KA,KB,lw,lh,bias", CASES)
def test_minority_collapse_threshold_is_sharp(KA, KB, lw, lh, bias):
    R = minority_collapse_ratio(KA, KB, lw, lh)
    counts = lambda f: [R * f] * KA + [1.0] * KB  # noqa: E731
    assert np.isclose(1.0 / (KA * R + KB), minority_collapse_weight(lw, lh), rtol=1e-14)
    B = list(range(KA, KA + KB))
    # just above R* the split direction's curvature is ∝ (R − R*): a residual r leaves a
    # spread of ~ r/(R/R* − 1), 1.7e-8 at r = 3e-11, R = 1.01 R*; hence tol = 1e-12 here
    above = [minority_spread(_certified(counts(f), lw, lh, bias, 1e-12).W, B)
             for f in (1.01, 1.1)]
    below = [minority_spread(_certified(counts(f), lw, lh, bias).W, B) for f in (0.9, 0.99)]
    assert max(above) < 1e-8, above
    # the split opens like √(R* − R): measured 0.13 and 0.039 at 0.9 R*, 0.99 R*
    assert below[0] > below[1] > 1e-2, below


def test_no_ratio_reaches_the_threshold_when_the_minority_weight_cannot_fall_that_low():
    assert minority_collapse_ratio(2, 3, 0.6, 0.6) == float("inf")


def test_free_bias_logits_still_tend_to_the_simplex_encoding():
    # with a free bias the margin matrix, bias included, still approaches the SEL direction P
    # (measured 0.245, 0.170, 0.130), while W Wᵀ does not: the bias takes the imbalance
    counts = np.asarray(STEP[0], dtype=np.float64)
    P = np.eye(4) - 0.25
    seq = []
    for lam in (1e-2, 1e-3, 1e-4):
        r = _certified(counts, lam, lam, True)
        L = (r.H @ r.W.T + r.b[None, :]) @ P
        seq.append(float(np.linalg.norm(L / np.linalg.norm(L) - P / np.linalg.norm(P))))
    assert all(b < a for a, b in zip(seq, seq[1:])), seq
