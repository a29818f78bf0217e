"""Global-optimality certificate ρ and the collapse threshold (THEORY §3)."""

from __future__ import annotations

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlnc_jax.model import labels as L
from mlnc_jax.model import losses
from mlnc_jax.model.ufm import UFMConfig, UFMParams, objective
from mlnc_jax.theory.closed_forms import closed_form

# the package namespace re-exports the function `certificate`, shadowing the submodule
C = importlib.import_module("mlnc_jax.engine.certificate")
T = importlib.import_module("mlnc_jax.theory.thresholds")

LW, LH = 3e-3, 2e-2
DIM = 8
K6_ROWS = 27  # K = 6 distributions are padded to 27 rows to share compiled solvers (conftest)

_obj = jax.jit(objective, static_argnames="config")
_grad = jax.jit(jax.grad(objective), static_argnames="config")


def dist6(padded=True):
    d = L.random_correlated(6, 3, max_multiplicity=2)
    return d.padded(K6_ROWS) if padded else d


def arrays(dist):
    return jnp.asarray(dist.label_sets), jnp.asarray(dist.weights)


def as_params(p):
    return UFMParams(*(jnp.asarray(a, jnp.float64) for a in p))


def rho_by_hand(params, dist, cfg):
    """‖[√π_s ∇ℓ(W h_s + b, y_s)]_s‖_op / √(λ_Wλ_H), padding rows skipped."""
    W, H, b = (np.asarray(a) for a in params)
    Y, w = np.asarray(dist.label_sets), np.asarray(dist.weights)
    g = jax.grad(losses.LOSSES[cfg.loss])
    cols = [math.sqrt(w[s]) * np.asarray(g(jnp.asarray(H[s] @ W.T + (b if cfg.bias else 0)),
                                          jnp.asarray(Y[s])))
            for s in range(len(w)) if w[s] > 0]
    return np.linalg.norm(np.stack(cols, 1), 2) / math.sqrt(cfg.lambda_w * cfg.lambda_h)


def solution(solve_cached, loss):
    # pal_normalized is solved unpadded (K = 6, 21 rows), the others padded to 27 rows
    dist = dist6(padded=(loss != "pal_normalized"))
    cfg = UFMConfig(loss, DIM, LW, LH)
    return dist, cfg, solve_cached(dist, cfg)


# -- ρ at a solution and away from it ---------------------------------------------------------


@pytest.mark.parametrize("loss", ["pal", "bce", "mse", "pal_normalized"])
def test_rho_is_one_at_a_solution(solve_cached, loss):
    dist, cfg, res = solution(solve_cached, loss)
    assert bool(res.converged)
    assert float(np.linalg.norm(res.W)) > 1e-2  # not the collapsed solution
    rho = float(res.certificate)
    assert abs(rho - 1.0) <= 1e-6, rho
    params = UFMParams(res.W, res.H, res.b)
    assert float(C.certificate(params, *arrays(dist), cfg)) == pytest.approx(rho, abs=1e-12)
    assert rho_by_hand(params, dist, cfg) == pytest.approx(rho, rel=1e-10)
    # at a critical point G Gᵀ W = λ_Wλ_H W (THEORY §3)
    G = np.asarray(C.gradient_matrix(params, *arrays(dist), cfg))
    W = np.asarray(res.W)
    assert np.linalg.norm(G @ G.T @ W - LW * LH * W) <= 1e-6 * LW * LH * np.linalg.norm(W)


@pytest.mark.parametrize("loss", ["pal", "bce", "mse", "pal_normalized"])
def test_rho_above_one_at_random_perturbation(solve_cached, loss):
    dist, cfg, res = solution(solve_cached, loss)
    rng = np.random.default_rng(2024)
    T = int(np.sum(np.asarray(dist.weights) > 0))
    pert = []
    for a in (res.W, res.H, res.b):
        a = np.asarray(a)
        noise = rng.normal(size=a.shape)
        if a.ndim == 2 and a.shape[0] == np.shape(dist.label_sets)[0]:
            noise[T:] = 0.0  # padding rows do not enter F
        pert.append(a + 0.05 * np.linalg.norm(a) / np.linalg.norm(noise) * noise)
    p = as_params(pert)
    Y, w = arrays(dist)
    assert float(_obj(p, Y, w, cfg)) > float(res.objective) + 1e-8  # not a minimiser
    rho = float(C.certificate(p, Y, w, cfg))
    assert rho > 1 + 1e-3, rho


def test_rho_above_one_at_shrunken_mse_solution(solve_cached):
    """Scaling the MSE optimum towards 0 raises every active residual above τ."""
    dist, cfg, res = solution(solve_cached, "mse")
    p = as_params((0.9 * np.asarray(res.W), 0.9 * np.asarray(res.H), res.b))
    assert float(C.certificate(p, *arrays(dist), cfg)) > 1 + 1e-3


def _drop_direction(params, col):
    W, H, b = (np.array(a) for a in params)
    W[:, col] = 0.0
    H[:, col] = 0.0
    return as_params((W, H, b))


@pytest.mark.parametrize("bias", [True, False])
def test_rho_at_mse_saddles(bias):
    """Closed form with one active direction removed: a critical point, not a minimiser,
    with ρ = √λ_removed / τ > 1 (the residual keeps its full size √λ_j there)."""
    dist = dist6()
    cfg = UFMConfig("mse", DIM, LW, LH, 0.0, bias)
    cf = closed_form(dist, cfg)
    Y, w = arrays(dist)
    tau = cfg.tau
    lam_active = np.sort(cf.eigenvalues)[::-1][: cf.rank]  # columns of params.W, in order
    assert cf.rank >= 3
    full = as_params(cf.params)
    assert float(C.certificate(full, Y, w, cfg)) == pytest.approx(1.0, abs=1e-10)
    for col in (0, cf.rank - 1):  # the strongest and the weakest active direction
        p = _drop_direction(cf.params, col)
        g = _grad(p, Y, w, cfg)
        gnorm = math.sqrt(sum(float(jnp.sum(x**2)) for x in g))
        assert gnorm <= 1e-12  # first-order critical
        assert float(_obj(p, Y, w, cfg)) > cf.objective + 1e-8  # but not global
        rho = float(C.certificate(p, Y, w, cfg))
        assert rho == pytest.approx(math.sqrt(lam_active[col]) / tau, rel=1e-9)
        assert rho > 1 + 1e-3
    # the same saddle, as produced by the d = rank − 1 closed form (top directions kept)
    cf_low = closed_form(dist, cfg._replace(dim=cf.rank - 1))
    W, H, b = (np.asarray(a) for a in cf_low.params)
    pad = DIM - W.shape[1]
    p = as_params((np.pad(W, ((0, 0), (0, pad))), np.pad(H, ((0, 0), (0, pad))), b))
    assert float(C.certificate(p, Y, w, cfg)) == pytest.approx(
        math.sqrt(lam_active[-1]) / tau, rel=1e-9)


# -- collapse threshold ---------------------------------------------------------------------------


def _collapse_gradients_by_hand(dist, loss):
    Y, w = np.asarray(dist.label_sets), np.asarray(dist.weights)
    p = w @ Y
    m = Y.sum(1)
    if loss in ("mse", "bce"):
        return p - Y
    if loss == "pal":
        return np.outer(m / p.sum(), p) - Y
    Yn = Y / np.where(m > 0, m, 1)[:, None]
    return (w @ Yn) - Yn


@pytest.mark.parametrize("loss", ["pal", "pal_normalized", "bce", "mse"])
def test_optimal_collapse_bias_and_gradients(loss):
    dist = dist6(padded=False)
    cfg = UFMConfig(loss, DIM, LW, LH)
    b0 = T.optimal_collapse_bias(dist, cfg)
    Y, w = arrays(dist)
    f = losses.LOSSES[loss]
    g0 = np.asarray(jax.vmap(jax.grad(f), (None, 0))(jnp.asarray(b0), Y))
    # b₀ minimises b ↦ Σ π ℓ(b, y): the weighted gradient vanishes
    assert np.max(np.abs(np.asarray(w) @ g0)) <= 1e-13
    np.testing.assert_allclose(T.collapse_gradients(dist, loss), g0, atol=1e-13)
    np.testing.assert_allclose(T.collapse_gradients(dist, loss),
                               _collapse_gradients_by_hand(dist, loss), atol=1e-13)
    S = (g0 * np.asarray(w)[:, None]).T @ g0
    assert T.collapse_threshold(dist, loss) == pytest.approx(np.linalg.eigvalsh(S)[-1], rel=1e-12)
    if loss in ("mse", "bce"):  # THEORY §3: the matrix is C
        p = dist.class_frequencies
        Cm = (np.asarray(Y) * np.asarray(w)[:, None]).T @ np.asarray(Y) - np.outer(p, p)
        assert T.collapse_threshold(dist, loss) == pytest.approx(np.linalg.eigvalsh(Cm)[-1],
                                                                 rel=1e-12)


def _collapse_config(dist, loss, factor):
    thr = T.collapse_threshold(dist, loss)
    t = math.sqrt(factor * thr)  # λ_W λ_H = factor × threshold, λ_W/λ_H = 4
    return UFMConfig(loss, DIM, 2.0 * t, t / 2.0), thr


@pytest.mark.parametrize("loss", ["pal", "mse"])
def test_collapse_above_threshold(solve_cached, loss):
    dist = dist6()
    cfg, thr = _collapse_config(dist, loss, 1.1)
    res = solve_cached(dist, cfg)
    assert bool(res.converged)
    assert float(np.linalg.norm(res.W)) <= 1e-6
    assert float(np.linalg.norm(res.H)) <= 1e-6
    rho = float(res.certificate)
    assert rho <= 1.0
    # at W = 0, H = 0 the gradient matrix is the collapse one: ρ = √(thr / λ_Wλ_H)
    assert rho == pytest.approx(1 / math.sqrt(1.1), abs=1e-6)
    # the collapsed objective is Σ π ℓ(b₀, y)
    b0 = T.optimal_collapse_bias(dist, cfg)
    Y, w = arrays(dist)
    f = jax.vmap(losses.LOSSES[loss], (None, 0))
    F0 = float(jnp.sum(w * f(jnp.asarray(b0), Y)))
    assert abs(float(res.objective) - F0) <= 1e-10
    if loss == "pal":  # the bias is b₀ up to the invariant shift c·1
        np.testing.assert_allclose(jax.nn.softmax(res.b), jax.nn.softmax(b0), atol=1e-7)
    else:
        np.testing.assert_allclose(res.b, b0, atol=1e-7)


@pytest.mark.parametrize("loss", ["pal", "mse"])
def test_no_collapse_below_threshold(solve_cached, loss):
    dist = dist6()
    cfg, thr = _collapse_config(dist, loss, 0.9)
    res = solve_cached(dist, cfg)
    assert bool(res.converged)
    assert float(np.linalg.norm(res.W)) > 1e-2
    assert abs(float(res.certificate) - 1.0) <= 1e-6
    b0 = T.optimal_collapse_bias(dist, cfg)
    Y, w = arrays(dist)
    f = jax.vmap(losses.LOSSES[loss], (None, 0))
    F0 = float(jnp.sum(w * f(jnp.asarray(b0), Y)))
    assert float(res.objective) < F0 - 1e-8
    if loss == "mse":
        cf = closed_form(dist, cfg)
        assert cf.rank == 1
        assert abs(float(res.objective) - cf.objective) <= 1e-10


# -- padding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["pal", "bce", "mse", "pal_normalized"])
def test_certificate_ignores_padding_rows(loss):
    d = dist6(padded=False)
    dp = d.padded(K6_ROWS)
    cfg = UFMConfig(loss, DIM, LW, LH)
    rng = np.random.default_rng(5)
    W, H, b = rng.normal(size=(6, DIM)), rng.normal(size=(d.num_sets, DIM)), rng.normal(size=6)
    Hp = np.zeros((K6_ROWS, DIM))
    Hp[: d.num_sets] = H
    r = float(C.certificate(as_params((W, H, b)), *arrays(d), cfg))
    rp = float(C.certificate(as_params((W, Hp, b)), *arrays(dp), cfg))
    # regression (pal_normalized): padding rows are empty sets, whose gradient is 0/0 = NaN;
    # NaN·√0 stayed NaN and made ρ NaN on every padded distribution
    assert np.isfinite(r)
    assert rp == pytest.approx(r, rel=1e-12)
    assert T.collapse_threshold(dp, loss) == pytest.approx(T.collapse_threshold(d, loss),
                                                           rel=1e-12)
