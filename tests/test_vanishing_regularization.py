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


@pytest.mark.parametrize("loss", ["ce", "bce", "mse"])
@pytest.mark.parametrize("bias", [False, True])
def test_certified_down_to_lambda_1e8(loss, bias):
    d = mj.multiclass([10, 10, 1, 1])
    for lam in (1e-4, 1e-6, 1e-8):
        r = mj.solve(d, mj.UFMConfig(loss, d.num_classes, lam, lam, bias=bias), warn=False)
        assert r.certified, (lam, r.status, r.reason)
        assert abs(float(r.certificate) - 1.0) <= 1e-6


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
