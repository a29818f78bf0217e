"""Vanishing regularization (THEORY §2c): certified solves down to λ_W = λ_H = 1e-8, and
loss gradients that keep their digits where the labels' logits dominate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlnc_jax as mj
from mlnc_jax.model import losses

jax.config.update("jax_enable_x64", True)


LAMBDAS = (1e-4, 1e-6, 1e-8)


# MSE with a free bias is left to continuation: its norms grow like λ^(-1/4) (100× at 1e-8)
# and from a random start at scale 0.1 the cold solve needs 355–500 steps (round-off decides)
@pytest.mark.parametrize("loss,bias", [("ce", False), ("ce", True), ("bce", False),
                                       ("bce", True), ("mse", False)])
def test_cold_solves_certified_down_to_lambda_1e8(loss, bias):
    d = mj.multiclass([10, 10, 1, 1])
    for lam in LAMBDAS:
        r = mj.solve(d, mj.UFMConfig(loss, d.num_classes, lam, lam, bias=bias), warn=False)
        assert r.certified, (lam, r.status, r.reason)
        assert abs(float(r.certificate) - 1.0) <= 1e-6


# Multi-label sets, cold at 1e-8. PAL's prototypes sit in curved valleys of O(1) curvature
# (the in-set logits stay equal) along which progress has O(λ) curvature: the refined trial
# points of `engine.newton` follow them (before: not_converged from 1e-7 on). PAL with a
# free bias is certified cold at 1e-8 under XLA's default flags (61 steps) but stalls at
# residual 1.9e-9 > tol under this suite's `--xla_backend_optimization_level=0`: continuation.
@pytest.mark.parametrize("loss,bias", [("ce", False), ("bce", False),
                                       ("bce", True), ("mse", False), ("mse", True)])
def test_cold_multilabel_solves_certified_at_lambda_1e8(loss, bias):
    d = mj.random_correlated(5, 1)
    r = mj.solve(d, mj.UFMConfig(loss, 5, 1e-8, 1e-8, bias=bias), warn=False)
    assert r.certified, (r.status, r.reason)


PATHS = [(loss, dist) for loss in ("ce", "bce", "mse") for dist in ("multiclass", "multilabel")]


@pytest.mark.parametrize("loss,dist", PATHS)
@pytest.mark.parametrize("bias", [False, True])
def test_continuation_certified_down_to_lambda_1e8(loss, dist, bias):
    d = mj.multiclass([10, 10, 1, 1]) if dist == "multiclass" else mj.random_correlated(5, 1)
    path = mj.solve_path(d, mj.UFMConfig(loss, d.num_classes, 1.0, 1.0, bias=bias), LAMBDAS,
                         warn=False)
    assert len(path) == len(LAMBDAS)
    for lam, r in zip(LAMBDAS, path):
        assert r.certified, (lam, r.status, r.reason)
    # two decades from a neighbouring optimum: measured 1 step (MSE) to 22 (PAL, multi-label,
    # with bias, under this suite's XLA flags), against 14–355 for cold solves at 1e-8
    assert int(path[-1].steps) <= 25, int(path[-1].steps)


def test_solve_path_refuses_bad_lambdas():
    with pytest.raises(mj.InputError, match="lambda_w must be > 0"):
        mj.solve_path(mj.multiclass([2, 1]), mj.UFMConfig("mse", 2, 1.0, 1.0), [1e-2, 0.0])


def test_pal_and_bce_gradients_keep_their_digits_at_large_margins():
    K, margin = 5, 30.0
    Z = np.zeros((K, K)) + margin * np.eye(K)
    Y = np.eye(K)
    _, g, _ = losses.pal.derivatives(jnp.asarray(Z), jnp.asarray(Y))
    # exact: g_k = −Σ_{j≠k} p_j = −(K−1)e^{−30}/(1 + (K−1)e^{−30}) on the label
    e = (K - 1) * np.exp(-margin)
    np.testing.assert_allclose(np.diag(np.asarray(g)), -e / (1 + e), rtol=1e-13)
    # two labels with equal logits: g_k = −R/(2 + R), R = (K−2)e^{−30}
    Y2 = np.zeros((1, K))
    Y2[0, :2] = 1
    Z2 = margin * Y2
    R = (K - 2) * np.exp(-margin)
    _, g2, _ = losses.pal.derivatives(jnp.asarray(Z2), jnp.asarray(Y2))
    np.testing.assert_allclose(np.asarray(g2)[0, :2], -R / (2 + R), rtol=1e-13)
    _, gb, _ = losses.bce.derivatives(jnp.asarray(Z), jnp.asarray(Y))
    np.testing.assert_allclose(np.diag(np.asarray(gb)), -1 / (1 + np.exp(margin)), rtol=1e-13)


@pytest.mark.parametrize("name", ["pal", "pal_normalized", "bce", "mse"])
def test_loss_change_keeps_the_digits_of_a_small_step(name):
    """`Loss.change` is `ℓ(z + dz) − ℓ(z)` to the round-off of `dz`: for a step of 1e-7 at
    25-unit margins it equals the second-order Taylor value to its third-order remainder,
    where the plain difference of two `ℓ`'s keeps ~9 digits fewer."""
    loss = losses.get_loss(name)
    rng = np.random.default_rng(0)
    K = 5
    Y = np.zeros((4, K))
    Y[0, 0] = Y[1, :2] = Y[2, 1:4] = Y[3, [0, 4]] = 1
    Z = 25.0 * Y + rng.normal(size=Y.shape) * 0.3
    dZ = 1e-7 * rng.normal(size=Y.shape)
    Zj, dZj, Yj = (jnp.asarray(a) for a in (Z, dZ, Y))
    _, g, curv = loss.derivatives(Zj, Yj)
    taylor = np.sum(np.asarray(g) * dZ, -1) + 0.5 * np.sum(
        dZ * np.asarray(loss.hess_matvec(curv, dZj)), -1)
    got = np.asarray(loss.change(Zj, dZj, Yj))
    # round-off of the change ~ ε‖dz‖₁·m; Taylor's remainder ~ ‖dz‖³
    bound = 8 * 2.0**-52 * np.abs(dZ).sum(-1) * (1 + Y.sum(-1)) + np.abs(dZ).sum(-1) ** 3
    assert np.all(np.abs(got - taylor) <= bound), (got, taylor)
    plain = np.asarray(loss.derivatives(Zj + dZj, Yj)[0] - loss.derivatives(Zj, Yj)[0])
    if name != "mse":  # the plain difference is what the step test could not use
        assert np.max(np.abs(plain - taylor)) > 100 * np.max(bound)


def test_schur_complement_is_symmetric_at_a_small_lambda_optimum():
    """`D_s⁻¹` with `Wᵀ = VR` square (`d ≤ K`) has no complement term: `(I − VVᵀ)/c` is
    round-off divided by `c = λ_H`. Added, it made the `(W)` Schur complement of PAL at
    λ = 1e-6 asymmetric by 4e-4 of its largest entry (7 % at 1e-7; CG met false negative
    curvature).
    The entries of `S` are differences of terms as large as `Σ_s ‖∇²ℓ_s‖‖U_s‖²`
    (`‖∇²ℓ_s‖ ≤ m_s` for PAL); symmetric to their round-off: `‖S − Sᵀ‖ ≤ 100 ε` times that."""
    from mlnc_jax.engine.hessian import Point, eliminate
    from mlnc_jax.engine.newton import Problem, value_grad

    d = mj.random_correlated(5, 1)
    lam = 1e-6
    r = mj.solve(d, mj.UFMConfig("pal", 5, lam, lam, bias=False), warn=False)
    assert r.certified, r.status
    w = jnp.asarray(d.weights)
    prob = Problem(jnp.asarray(d.label_sets, dtype=w.dtype), w, jnp.asarray([lam, lam, 0.0]))
    W, U, b = r.W, r.H * jnp.sqrt(w)[:, None], jnp.zeros(5)
    _, _, _, _, G, curv = value_grad(W, U, b, prob, losses.pal, False)
    schur = eliminate(Point(W, U, b, G, curv), prob, losses.pal, False, 0.0).schur
    E = np.eye(25).reshape(25, 5, 5)
    S = np.stack([np.asarray(schur(jnp.asarray(e), b)[0]).ravel() for e in E], 1)
    terms = float(jnp.sum(jnp.sum(prob.Y, -1) * jnp.sum(U * U, -1)))
    asym = np.abs(S - S.T).max()
    assert asym <= 100 * 2.0**-52 * terms, (asym, terms, np.abs(S).max())
