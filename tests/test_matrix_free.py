"""The large-label-space path of the engine: the matrix-free Newton direction
(`mlnc_jax.engine.matrix_free`), the flop/memory switch between the two paths, and the progress
bar of a single long solve."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlnc_jax as mj
from mlnc_jax.engine.newton import choose_method, step_flops
from mlnc_jax.io import schema
from mlnc_jax.model.errors import InputError
from mlnc_jax.model.losses import LOSSES, Loss


def _logits(r, loss):
    """`Z = HWᵀ + b` with the directions the loss ignores (PAL: `1`) projected out."""
    Z = np.asarray(r.H) @ np.asarray(r.W).T + np.asarray(r.b)
    V = loss.ignored_directions(Z.shape[1])
    return Z - (Z @ V.T) @ V


def _losses():
    huber = Loss.from_function("smooth_bce", lambda z, y: jnp.sum(jax.nn.softplus(z) - y * z))
    return [LOSSES[n] for n in sorted(LOSSES)] + [huber]


@pytest.mark.parametrize("loss", _losses(), ids=lambda l: l.name)
def test_hess_diagonal_matches_autodiff(loss):
    """`hess_diagonal(curv, P) = diag(Pᵀ∇²ℓ_s P)` and `diag ∇²ℓ_s` against jax.hessian."""
    z = jax.random.normal(jax.random.PRNGKey(0), (4, 5), jnp.float64)
    Y = jnp.asarray([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1.]])
    _, _, curv = loss.derivatives(z, Y)
    hess = jax.vmap(jax.hessian(loss))(z, Y)
    P = jax.random.normal(jax.random.PRNGKey(3), (5, 3), jnp.float64)
    np.testing.assert_allclose(loss.hess_diagonal(curv, P),
                               jnp.einsum("kj,tkl,lj->tj", P, hess, P), atol=1e-12)
    np.testing.assert_allclose(loss.hess_diagonal(curv, None),
                               jnp.diagonal(hess, axis1=1, axis2=2), atol=1e-13)


@pytest.mark.parametrize("loss", ["pal", "bce", "mse"])
def test_both_paths_reach_the_same_certified_optimum(loss):
    """THEORY §2c: both paths stop at block residual ≤ tol and are certified (ρ ≤ 1 +
    cert_tol), so both are the global optimum; logits `Z = HWᵀ + b` are unique there (the
    objective is strictly convex in Z, modulo the directions the loss ignores, for d ≥
    rank), so they agree to the accuracy the residual allows."""
    dist = mj.random_correlated(7, seed=3, max_multiplicity=3)
    cfg = mj.UFMConfig(loss, 7, 5e-3, 5e-3)
    exact = mj.solve(dist, cfg, method="exact")
    free = mj.solve(dist, cfg, method="matrix_free")
    assert str(exact.status) == str(free.status) == "certified"
    assert free.residual <= 1e-10 and exact.residual <= 1e-10
    np.testing.assert_allclose(free.objective, exact.objective, rtol=1e-12)
    Z0 = _logits(exact, cfg.loss_record)
    assert np.linalg.norm(_logits(free, cfg.loss_record) - Z0) <= 1e-6 * np.linalg.norm(Z0)


def test_matrix_free_solve_batch_mixes_problems():
    """Several problems side by side on the matrix-free path: each certified, each equal to
    its single solve."""
    dists = [mj.random_correlated(5, seed=s) for s in range(3)]
    cfg = mj.UFMConfig("bce", 5, 1e-2, 1e-2)
    many = mj.solve_batch(dists, cfg, method="matrix_free", lambda_w=[1e-2, 2e-2, 5e-3])
    assert list(map(str, many.status)) == ["certified"] * 3
    for i, lw in enumerate([1e-2, 2e-2, 5e-3]):
        one = mj.solve(dists[i], cfg._replace(lambda_w=lw), method="exact")
        np.testing.assert_allclose(many.objective[i], one.objective, rtol=1e-12)


def test_auto_picks_the_exact_path_for_small_and_matrix_free_for_large_label_spaces():
    assert choose_method(256, 14, 14) == "exact"
    assert choose_method(1024, 32, 32) == "exact"
    assert choose_method(1024, 80, 80) == "matrix_free"
    # delicious at d = K: 10¹³ flops and ~120 GB of per-set factors on the exact path
    assert choose_method(16384, 983, 983) == "matrix_free"
    assert step_flops(16384, 983, 983, "exact", 0) > 1e13
    assert schema.estimate_solve_bytes(983, 16384, 983, 1, "exact") > 100e9
    assert schema.estimate_solve_bytes(983, 16384, 983, 1, "matrix_free") < 8e9
    # a low-dimensional embedding of the same labels keeps the exact path
    assert choose_method(16384, 983, 8) == "exact"


def test_method_is_checked():
    dist = mj.random_correlated(4, seed=0)
    with pytest.raises(InputError, match="method must be 'auto' or one of 'exact', 'matrix_free'"):
        mj.solve(dist, mj.UFMConfig("pal", 4, 1e-2, 1e-2), method="cg")


def test_single_solve_progress_bar_shows_residual_and_eta(capsys):
    dist = mj.random_correlated(5, seed=1)
    mj.solve(dist, mj.UFMConfig("pal", 5, 1e-2, 1e-2), progress=True, method="matrix_free")
    err = capsys.readouterr().err
    assert "solve: residual" in err and "-> 1e-10" in err and "100%" in err
    # the bar ends on the final residual, not on "no live problem"
    final = float(re.findall(r"solve: residual ([0-9.e+-]+) ->", err)[-1])
    assert 0 < final <= 1e-10
