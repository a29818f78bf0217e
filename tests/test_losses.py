"""Losses (THEORY §2) and the UFM objective: definitions, invariances, stability, gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlnc_jax.model import labels as L
from mlnc_jax.model import losses, ufm
from mlnc_jax.model.errors import InputError

jax.config.update("jax_enable_x64", True)

K = 5
RNG = np.random.default_rng(0)
Z = RNG.normal(size=(6, K)) * 2.0
SETS = [(0,), (1, 3), (0, 2, 4), (4,), (1, 2, 3, 4), tuple(range(K))]
Y = np.zeros((len(SETS), K))
for i, s in enumerate(SETS):
    Y[i, list(s)] = 1.0


def _lse(z):
    z = np.asarray(z, dtype=np.float64)
    m = z.max()
    return m + np.log(np.sum(np.exp(z - m)))


def _ref(name, z, y):
    """Textbook definitions of THEORY §2, in numpy."""
    z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
    S = np.flatnonzero(y)
    if name == "pal":
        return sum(-z[k] + _lse(z) for k in S)
    if name == "pal_normalized":
        return _lse(z) - y @ z / y.sum()
    if name == "bce":
        return float(np.sum(np.logaddexp(0.0, z) - y * z))
    if name == "mse":
        return 0.5 * float(np.sum((z - y) ** 2))
    raise KeyError(name)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_loss_definitions(name):
    f = losses.LOSSES[name]
    for z, y in zip(Z, Y):
        assert float(f(jnp.asarray(z), jnp.asarray(y))) == pytest.approx(_ref(name, z, y),
                                                                          rel=1e-13, abs=1e-13)


def test_pal_is_sum_over_labels_and_shift_invariant():
    for z, y in zip(Z, Y):
        z, y = jnp.asarray(z), jnp.asarray(y)
        S = np.flatnonzero(np.asarray(y))
        want = sum(-z[k] + jax.nn.logsumexp(z) for k in S)
        assert float(losses.pal(z, y)) == pytest.approx(float(want), rel=1e-13)
        for c in (-7.5, 0.3, 100.0):
            assert float(losses.pal(z + c, y)) == pytest.approx(float(losses.pal(z, y)),
                                                                rel=1e-12, abs=1e-12)
            assert float(losses.pal_normalized(z + c, y)) == pytest.approx(
                float(losses.pal_normalized(z, y)), rel=1e-12, abs=1e-12)


def test_pal_normalized_is_pal_over_m():
    for z, y in zip(Z, Y):
        z, y = jnp.asarray(z), jnp.asarray(y)
        m = float(jnp.sum(y))
        assert float(losses.pal_normalized(z, y)) == pytest.approx(float(losses.pal(z, y)) / m,
                                                                   rel=1e-13)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
@pytest.mark.parametrize("scale", [1e3, -1e3, 3e3])
def test_losses_stable_at_large_logits(name, scale):
    f = losses.LOSSES[name]
    z = jnp.asarray(np.linspace(-1, 1, K) * scale)
    for y in Y:
        y = jnp.asarray(y)
        v = float(f(z, y))
        g = np.asarray(jax.grad(f)(z, y))
        assert np.isfinite(v) and np.all(np.isfinite(g))
        if name != "mse":
            # the large-logit value is the exact piecewise-linear limit
            assert v == pytest.approx(_ref(name, np.asarray(z), np.asarray(y)), rel=1e-12)
    # a confident correct prediction has (almost) zero loss, a confident wrong one ≈ |z|
    y1 = jnp.zeros(K).at[K - 1].set(1.0)
    zc = jnp.zeros(K).at[K - 1].set(abs(scale))
    if name in ("pal", "pal_normalized"):
        assert float(f(zc, y1)) <= 1e-12
        # z = −|c| e_K: LSE = log(K − 1 + e^{−|c|}), loss = |c| + log(K − 1)
        assert float(f(-zc, y1)) == pytest.approx(abs(scale) + np.log(K - 1), rel=1e-12)


def test_get_loss_unknown():
    with pytest.raises(InputError, match="unknown loss 'softmax'"):
        losses.get_loss("softmax")


def test_ce_is_pal_and_softmax_cross_entropy_on_singletons():
    assert losses.get_loss("ce") is losses.pal
    assert ufm.UFMConfig("ce", 3, 1e-2, 1e-2).loss_record is losses.pal
    z = jnp.asarray(Z)
    onehot = jnp.eye(K)[np.arange(Z.shape[0]) % K]
    l, _, _ = losses.pal.derivatives(z, onehot)
    ce = -jnp.sum(onehot * jax.nn.log_softmax(z), axis=1)
    np.testing.assert_allclose(np.asarray(l), np.asarray(ce), rtol=1e-13)
    with pytest.raises(InputError, match="already registered"):
        losses.register_loss(losses.Loss.from_function("ce", lambda z, y: jnp.sum(z * y)))


# -- gradients against central finite differences (float64) ---------------------------------


def _fd_grad(f, x, h=1e-6):
    x = np.asarray(x, dtype=np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (float(f(x + e)) - float(f(x - e))) / (2 * h)
    return g


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_loss_gradients_match_finite_differences(name):
    f = losses.LOSSES[name]
    for z, y in zip(Z, Y):
        yj = jnp.asarray(y)
        g = np.asarray(jax.grad(f)(jnp.asarray(z), yj))
        fd = _fd_grad(lambda zz, yj=yj: f(jnp.asarray(zz), yj), z)
        np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-8)
    # closed-form gradients: softmax-based for pal
    for z, y in zip(Z, Y):
        sm = np.exp(z - _lse(z))
        g = np.asarray(jax.grad(f)(jnp.asarray(z), jnp.asarray(y)))
        want = {"pal": y.sum() * sm - y, "pal_normalized": sm - y / y.sum(),
                "bce": 1 / (1 + np.exp(-z)) - y, "mse": z - y}[name]
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-13)


UFM_CASES = [(loss, bias, lb) for loss in sorted(losses.LOSSES)
             for bias, lb in [(False, 0.0), (True, 0.0), (True, 0.3)]]


@pytest.mark.parametrize("loss,bias,lambda_b", UFM_CASES)
def test_ufm_objective_gradient_matches_finite_differences(loss, bias, lambda_b):
    dist = L.random_correlated(4, 2, max_multiplicity=3)
    cfg = ufm.UFMConfig(loss, 3, 0.07, 0.02, lambda_b, bias).validate()
    T = dist.num_sets
    rng = np.random.default_rng(7)
    params = ufm.UFMParams(jnp.asarray(rng.normal(size=(4, 3))),
                           jnp.asarray(rng.normal(size=(T, 3))),
                           jnp.asarray(rng.normal(size=(4,))))
    Yd, wd = jnp.asarray(dist.label_sets), jnp.asarray(dist.weights)
    f = jax.jit(lambda p: ufm.objective(p, Yd, wd, cfg))
    g = jax.jit(jax.grad(f))(params)
    if not bias:
        assert float(jnp.max(jnp.abs(g.b))) == 0.0
    # directional derivatives along random directions, and a few coordinates
    for _ in range(4):
        d = ufm.UFMParams(*(jnp.asarray(rng.normal(size=np.shape(a))) for a in params))
        h = 1e-5
        plus = ufm.UFMParams(*(a + h * b for a, b in zip(params, d)))
        minus = ufm.UFMParams(*(a - h * b for a, b in zip(params, d)))
        fd = (float(f(plus)) - float(f(minus))) / (2 * h)
        an = float(sum(jnp.sum(a * b) for a, b in zip(g, d)))
        assert an == pytest.approx(fd, rel=1e-7, abs=1e-9)
    # explicit formula: ∂F/∂W = Σ π_s g_s h_sᵀ + λ_W W, ∂F/∂h_s = π_s (Wᵀ g_s + λ_H h_s),
    # ∂F/∂b = Σ π_s g_s + λ_b b  (bias only)
    gs = np.asarray(ufm.loss_gradients(params, Yd, wd, cfg))
    w = np.asarray(wd)
    W, H, b = (np.asarray(a) for a in params)
    np.testing.assert_allclose(np.asarray(g.W), (gs * w[:, None]).T @ H + cfg.lambda_w * W,
                               rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(np.asarray(g.H), w[:, None] * (gs @ W + cfg.lambda_h * H),
                               rtol=1e-11, atol=1e-13)
    if bias:
        np.testing.assert_allclose(np.asarray(g.b), w @ gs + lambda_b * b, rtol=1e-11, atol=1e-13)


def test_ufm_objective_value_by_hand():
    dist = L.random_correlated(4, 2, max_multiplicity=2)
    rng = np.random.default_rng(3)
    W, H, b = rng.normal(size=(4, 3)), rng.normal(size=(dist.num_sets, 3)), rng.normal(size=4)
    Yd, w = np.asarray(dist.label_sets), np.asarray(dist.weights)
    for loss, bias, lb in [("pal", True, 0.5), ("bce", False, 0.0), ("mse", True, 0.0)]:
        cfg = ufm.UFMConfig(loss, 3, 0.1, 0.2, lb, bias).validate()
        z = H @ W.T + (b if bias else 0.0)
        want = sum(w[s] * _ref(loss, z[s], Yd[s]) for s in range(len(w)))
        want += 0.05 * np.sum(W**2) + 0.1 * np.sum(w * np.sum(H**2, 1))
        if bias:
            want += lb / 2 * np.sum(b**2)
        got = float(ufm.objective(ufm.UFMParams(*map(jnp.asarray, (W, H, b))), Yd, w, cfg))
        assert got == pytest.approx(want, rel=1e-13)


def test_per_sample_objective_is_mean_with_unscaled_feature_penalty():
    """(1/N) Σ ℓ + λ_W/2 ‖W‖² + λ_H/(2N) ‖H‖² (THEORY §2)."""
    rng = np.random.default_rng(4)
    N = 9
    Yn = (rng.random((N, 4)) < 0.4).astype(float)
    Yn[:, 0] = 1.0
    W, H, b = rng.normal(size=(4, 2)), rng.normal(size=(N, 2)), rng.normal(size=4)
    cfg = ufm.UFMConfig("pal", 2, 0.3, 0.7).validate()
    z = H @ W.T + b
    want = np.mean([_ref("pal", z[i], Yn[i]) for i in range(N)])
    want += 0.15 * np.sum(W**2) + 0.35 / N * np.sum(H**2)
    got = float(ufm.per_sample_objective(ufm.UFMParams(*map(jnp.asarray, (W, H, b))), Yn, cfg))
    assert got == pytest.approx(want, rel=1e-13)


def test_a_registered_loss_is_known_to_the_cli_the_plots_and_the_report():
    from mlnc_jax.app import cli, plotting
    from mlnc_jax.model.losses import LOSSES, Loss, get_loss, register_loss
    wbce = Loss.from_function("weighted_bce_reg", lambda z, y: jnp.sum(
        jnp.array([1.0, 2.0]) * (jax.nn.softplus(z) - y * z)))
    register_loss(wbce)
    try:
        assert get_loss("weighted_bce_reg") is wbce
        sub = cli.build_parser()._subparsers._group_actions[0].choices["solve"]
        loss_action = next(a for a in sub._actions if a.dest == "loss")
        assert "weighted_bce_reg" in loss_action.choices
        colors = [plotting.LOSS_COLORS[n] for n in LOSSES]
        assert len(set(colors)) == len(colors) and plotting.LOSS_COLORS[wbce] == colors[-1]
        with pytest.raises(InputError, match="already registered"):
            register_loss(Loss.from_function("weighted_bce_reg", lambda z, y: jnp.sum(z)))
    finally:
        LOSSES.pop("weighted_bce_reg")
    assert "weighted_bce_reg" not in plotting.LOSS_COLORS
