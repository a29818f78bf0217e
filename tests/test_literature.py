"""Published exact results (Zhu 2021, Dang 2023, Li 2024) against certified solves.

The predictions come from `mlnc_jax.theory.literature`, written from the papers in their own
variables; only rotation invariants of the solve are compared (Gram matrices, logits).
Solves run with `tol=1e-12`, so exact statements are held to 1e-8 relative.
"""

import jax
import numpy as np
import pytest

import mlnc_jax as mj
from mlnc_jax.theory import literature as lit

jax.config.update("jax_enable_x64", True)

DIM, TOL, EXACT = 8, 1e-12, 1e-8


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _classes(dist):
    # rows of the solve follow dist.label_sets; map each singleton row to its class
    return np.argmax(np.asarray(dist.label_sets), axis=1)


def _etf_gram(K, rho):
    return rho * K / (K - 1) * (np.eye(K) - np.ones((K, K)) / K)


@pytest.mark.parametrize("K,n,lambda_w,lambda_h,lambda_b", [
    (3, 5, 1e-2, 1e-4, 0.0),
    (5, 10, 5e-3, 2e-4, 0.0),
    (6, 4, 1e-2, 1e-3, 1e-2),
])
def test_zhu_theorem_3_1(K, n, lambda_w, lambda_h, lambda_b):
    """Zhu et al. (2021) Thm 3.1: simplex ETF, ‖h‖/‖w‖ = √(λ_W/(nλ_H)), b = b·1."""
    pred = lit.zhu_etf(K, n, lambda_w, lambda_h, lambda_b)
    assert not pred.collapsed
    dist = mj.multiclass([n] * K)
    cfg = mj.UFMConfig("ce", DIM, lambda_w, lit.zhu_lambda_h_ours(K, n, lambda_h), lambda_b)
    res = mj.solve(dist, cfg, tol=TOL)
    assert res.certified
    cls = _classes(dist)
    W, H = res.W, res.H[np.argsort(cls)]
    assert _rel(W @ W.T, _etf_gram(K, pred.w_norm**2)) <= EXACT
    assert _rel(H @ H.T, _etf_gram(K, pred.h_norm**2)) <= EXACT
    assert _rel(H @ W.T, pred.ratio * W @ W.T) <= EXACT
    b = np.asarray(res.b)
    # b = b·1: its contrast part vanishes; with λ_b > 0 the constant is 0 too
    assert np.linalg.norm(b - (b.mean() if lambda_b == 0 else pred.b)) <= EXACT * pred.w_norm


@pytest.mark.parametrize("factor,collapsed", [(0.97, False), (1.03, True)])
def test_zhu_collapse_lambda(factor, collapsed):
    """Zhu et al. (2021): W = H = 0 exactly when λ_H ≥ 1/(n K² λ_W) (paper λ_H)."""
    K, n, lambda_w = 4, 6, 1e-2
    lambda_h = factor * lit.zhu_collapse_lambda(K, n, lambda_w)
    pred = lit.zhu_etf(K, n, lambda_w, lambda_h)
    assert pred.collapsed is collapsed
    cfg = mj.UFMConfig("ce", DIM, lambda_w, lit.zhu_lambda_h_ours(K, n, lambda_h))
    res = mj.solve(mj.multiclass([n] * K), cfg, tol=TOL)
    assert res.certified
    if collapsed:
        assert np.linalg.norm(res.W) <= 1e-10 and np.linalg.norm(res.H) <= 1e-10
    else:
        assert pred.w_norm > 0
        assert _rel(res.W @ res.W.T, _etf_gram(K, pred.w_norm**2)) <= EXACT


def _check_dang(counts, lambda_w, lambda_h):
    pred = lit.dang_mse(counts, lambda_w, lambda_h)
    dist = mj.multiclass(counts)
    N = float(np.sum(counts))
    cfg = mj.UFMConfig("mse", DIM, lambda_w, N * lambda_h, bias=False)
    res = mj.solve(dist, cfg, tol=TOL)
    assert res.certified
    H = res.H[np.argsort(_classes(dist))]
    scale = float(np.max(pred.w_sq))
    assert np.linalg.norm(res.W @ res.W.T - np.diag(pred.w_sq)) <= EXACT * scale
    assert _rel(H @ H.T, np.diag(pred.h_sq)) <= EXACT
    assert np.linalg.norm(H @ res.W.T - np.diag(pred.margin)) <= EXACT
    return pred, res


@pytest.mark.parametrize("counts,lambda_w,lambda_h", [
    ([40, 20, 10, 5], 1e-3, 1e-6),
    ([100, 100, 10, 10, 10], 2e-3, 4e-6),
    ([30, 25, 20, 15, 10, 5], 5e-3, 1e-5),
])
def test_dang_imbalanced_mse(counts, lambda_w, lambda_h):
    """Dang et al. (2023), one layer, no bias: orthogonal W, soft-thresholded norms."""
    pred, _ = _check_dang(counts, lambda_w, lambda_h)
    assert not pred.dead.any()


def test_dang_per_class_threshold():
    """Dang et al. (2023): w_k = 0 exactly for the classes with n_k ≤ N² λ_W λ_H."""
    counts = np.array([50.0, 20.0, 10.0, 2.0])
    N2 = counts.sum() ** 2
    lambda_w = 1e-2
    # N²λ_Wλ_H = 6 lies between n = 2 (dead) and n = 10 (alive)
    lambda_h = 6.0 / (N2 * lambda_w)
    pred, res = _check_dang(counts, lambda_w, lambda_h)
    assert pred.dead.tolist() == [False, False, False, True]
    assert np.linalg.norm(res.W[3]) <= 1e-10 and np.all(pred.w_sq[:3] > 0)


def _li_predictions(dist, K, pred):
    Y = np.asarray(dist.label_sets, dtype=np.float64)
    m = Y.sum(1).astype(int)
    kap = K / (K - 1)
    alpha = np.array([pred.alpha.get(int(k), 0.0) for k in m])
    G = _etf_gram(K, pred.rho)
    HH = (alpha[:, None] * Y) @ G @ (alpha[:, None] * Y).T
    beta = np.array([pred.gap.get(int(k), 0.0) / kap for k in m])
    Z = beta[:, None] * np.where(Y > 0, (K - m[:, None]) / (K - 1), -m[:, None] / (K - 1))
    return G, HH, Z


@pytest.mark.parametrize("K,masses,lambda_w,lambda_h", [
    (4, {1: 0.5, 2: 0.3, 3: 0.2}, 1e-2, 2e-2),
    (5, {1: 0.6, 2: 0.4}, 5e-3, 1e-2),
    (4, {1: 0.6, 2: 0.3, 4: 0.1}, 1e-2, 1e-2),
])
def test_li_mlab_nc(K, masses, lambda_w, lambda_h):
    """Li et al. (2024): ETF classifier, h_S = α_m Σ_{k∈S} w_k, (ρ, α) from the scalar problem."""
    pred = lit.li_pal_constants(K, masses, lambda_w, lambda_h)
    assert not pred.collapsed
    dist = mj.balanced(K, masses)
    res = mj.solve(dist, mj.UFMConfig("pal", DIM, lambda_w, lambda_h), tol=TOL)
    assert res.certified
    G, HH, Z = _li_predictions(dist, K, pred)
    assert _rel(res.W @ res.W.T, G) <= EXACT
    assert _rel(res.H @ res.H.T, HH) <= EXACT
    assert _rel(res.H @ res.W.T, Z) <= EXACT


@pytest.mark.parametrize("factor", [0.97, 1.03])
def test_li_collapse(factor):
    """Li et al. (2024) scalar problem: ρ = 0 exactly past λ_W λ_H = Σ π(m) m(K−m)/(K(K−1))."""
    K, masses, lambda_w = 4, {1: 0.5, 2: 0.5}, 1e-1
    thr = lit.li_pal_constants(K, masses, lambda_w, 1e-3).threshold
    lambda_h = factor * thr / lambda_w
    pred = lit.li_pal_constants(K, masses, lambda_w, lambda_h)
    assert pred.collapsed is (factor > 1)
    res = mj.solve(mj.balanced(K, masses), mj.UFMConfig("pal", DIM, lambda_w, lambda_h),
                   tol=TOL)
    assert res.certified
    if pred.collapsed:
        assert np.linalg.norm(res.W) <= 1e-10
    else:
        assert _rel(res.W @ res.W.T, _etf_gram(K, pred.rho)) <= EXACT


def test_conventions_table_rows():
    """Every paper of the README convention table has a row with the four mapped fields."""
    for row in lit.CONVENTIONS.values():
        assert {"objective", "lambda_w", "lambda_h", "lambda_b", "bias"} <= set(row)
