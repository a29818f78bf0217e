"""The one engine: Loss records, user losses, THEORY §2b refusals, §2c verdicts, rare sets,
memory, and library hygiene (no global JAX state changed)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlnc_jax as mj
from mlnc_jax.model.errors import InputError
from mlnc_jax.model.losses import LOSSES, Loss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _prototype_residuals(res, dist, config):
    """`‖Wᵀ∇ℓ(W h_s + b, y_s) + λ_H h_s‖ / (λ_H ‖h_s‖)` per label set, by autodiff of the
    loss record's value: an independent check of stationarity (THEORY §2c)."""
    loss = config.loss_record
    W, H, b = (jnp.asarray(x) for x in (res.W, res.H, res.b))
    Y = jnp.asarray(dist.label_sets)
    g = jax.vmap(jax.grad(loss))(H @ W.T + b, Y)
    r = g @ W + config.lambda_h * H
    return np.asarray(jnp.linalg.norm(r, axis=1) / (config.lambda_h * jnp.linalg.norm(H, axis=1)))


# -- Loss records -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_structured_curvature_matches_autodiff(name):
    """`derivatives` (value, gradient, diag + rank-one curvature) against jax.hessian."""
    loss = LOSSES[name]
    z = jax.random.normal(jax.random.PRNGKey(0), (4, 5), jnp.float64)
    Y = jnp.asarray([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1.]])
    l, g, curv = loss.derivatives(z, Y)
    hess = jax.vmap(jax.hessian(loss))(z, Y)
    np.testing.assert_allclose(g, jax.vmap(jax.grad(loss))(z, Y), atol=1e-13)
    V = jax.random.normal(jax.random.PRNGKey(1), (4, 5), jnp.float64)
    np.testing.assert_allclose(loss.hess_matvec(curv, V), jnp.einsum("tkl,tl->tk", hess, V), atol=1e-13)
    R = jax.random.normal(jax.random.PRNGKey(2), (3, 5), jnp.float64)
    np.testing.assert_allclose(loss.hess_congruence(curv, R),
                               jnp.einsum("ik,tkl,jl->tij", R, hess, R), atol=1e-12)
    assert loss.convex and mj.get_loss(name) is loss
    # the ignored directions are ignored: ℓ(z + c v) = ℓ(z)
    for v in loss.ignored_directions(5):
        np.testing.assert_allclose(jax.vmap(loss)(z + 3.0 * v, Y), l, atol=1e-12)


def test_collapse_bias_is_the_minimiser_of_the_bias_problem():
    """`collapse_bias` (closed forms of THEORY §3) against Newton on Σ π_s ℓ(b, y_s)."""
    d = mj.random_correlated(5, 3, max_multiplicity=3)
    Y, w = np.asarray(d.label_sets), np.asarray(d.weights)
    for name, loss in LOSSES.items():
        user = Loss.from_function(name, loss)
        b0, b1 = loss.collapse_bias(Y, w), user.collapse_bias(Y, w)
        if loss.ignored_directions(5).shape[0]:  # defined up to c·1
            b0, b1 = b0 - b0.mean(), b1 - b1.mean()
        np.testing.assert_allclose(b0, b1, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(loss.collapse_gradients(Y, w), user.collapse_gradients(Y, w),
                                   atol=1e-9, err_msg=name)


def test_unknown_loss_is_one_line():
    with pytest.raises(InputError, match="unknown loss 'hinge'"):
        mj.UFMConfig("hinge", 3, 1e-2, 1e-2).validate()
    with pytest.raises(InputError, match="callable"):
        Loss.from_function("x", 3.0)


# -- user-defined losses, solved and certified end to end ----------------------------------------


def test_class_weighted_bce_is_certified():
    d = mj.random_correlated(5, 1, max_multiplicity=2)
    c = jnp.asarray([1.0, 2.0, 0.5, 3.0, 1.0])
    wbce = Loss.from_function(
        "weighted_bce", lambda z, y: jnp.sum(c * (jax.nn.softplus(z) - y * z)),
        minimiser_error=mj.bce.minimiser_error)
    cfg = mj.UFMConfig(wbce, 5, 5e-3, 5e-3)
    res = mj.solve(d, cfg, seed=0)
    assert res.status == "certified", res.reason
    assert abs(res.certificate - 1) <= 1e-6
    assert np.max(_prototype_residuals(res, d, cfg)) <= 1e-8
    # the same function with c = 1 is the built-in bce: same optimum
    plain = Loss.from_function("bce_by_autodiff", lambda z, y: jnp.sum(jax.nn.softplus(z) - y * z))
    a, b = mj.solve(d, cfg._replace(loss=plain)), mj.solve(d, cfg._replace(loss="bce"))
    assert a.certified and b.certified
    assert abs(a.objective - b.objective) <= 1e-12 * abs(b.objective)
    assert _rel(a.W @ a.W.T, b.W @ b.W.T) <= 1e-7
    # and the weights change the answer
    assert _rel(res.W @ res.W.T, b.W @ b.W.T) > 1e-2


def test_logit_adjusted_pal_is_certified_and_shifts_only_the_bias():
    """`ℓ(z + τ log p)` with a free bias has the PAL optimum with `b = b_PAL − τ log p`."""
    d = mj.singleton_imbalance(5, 8.0, multiplicity_mass={1: 0.7, 2: 0.3})
    tau_la = 1.0
    shift = tau_la * jnp.log(jnp.asarray(d.class_frequencies))
    la = Loss.from_function("pal_logit_adjusted", lambda z, y: mj.pal(z + shift, y),
                            ignored_directions=mj.pal.ignored_directions)
    cfg = mj.UFMConfig(la, 5, 5e-3, 5e-3)
    res, ref = mj.solve(d, cfg), mj.solve(d, cfg._replace(loss="pal"))
    assert res.status == "certified" and ref.status == "certified", res.reason
    assert abs(res.objective - ref.objective) <= 1e-12 * abs(ref.objective)
    assert _rel(res.W @ res.W.T, ref.W @ ref.W.T) <= 1e-7
    assert _rel(res.H @ res.H.T, ref.H @ ref.H.T) <= 1e-7
    db = res.b - (ref.b - np.asarray(shift))
    assert np.ptp(db) <= 1e-7  # equal up to c·1, which PAL ignores


def test_non_convex_loss_is_never_certified():
    d = mj.random_correlated(4, 0, max_multiplicity=2)
    nc = Loss.from_function("mse_nonconvex_flag", lambda z, y: 0.5 * jnp.sum((z - y) ** 2),
                            convex=False)
    res = mj.solve(d, mj.UFMConfig(nc, 4, 1e-2, 1e-2), warn=False)
    assert res.converged and not res.certified
    assert res.status == "converged_uncertified" and "non-convex" in res.reason


# -- THEORY §2b: no minimiser, refused before any compute ------------------------------------------


def test_no_minimiser_distributions_are_refused_in_one_line():
    every = mj.LabelDistribution.from_sets([[0], [0, 1], [0, 2]], [1, 1, 1], 3)
    with pytest.raises(InputError, match=r"class 0 has frequency p = 1.*lambda_b > 0 or no bias"):
        mj.solve(every, mj.UFMConfig("bce", 3, 1e-2, 1e-2))
    unused = mj.LabelDistribution.from_sets([[0], [1], [0, 1]], [1, 1, 1], 3)
    for loss in ("pal", "pal_normalized", "bce"):
        with pytest.raises(InputError, match=r"class 2 has frequency p = 0"):
            mj.solve(unused, mj.UFMConfig(loss, 3, 1e-2, 1e-2))
    with pytest.raises(InputError, match=r"distributions\[1\]: no minimiser"):
        mj.solve_batch([mj.random_correlated(3, 0), every], mj.UFMConfig("bce", 3, 1e-2, 1e-2))
    # PAL with a class in every set (m̄ > 1) does have a minimiser (THEORY §2b)
    assert mj.solve(every, mj.UFMConfig("pal", 3, 1e-2, 1e-2)).certified
    # with lambda_b > 0 or no bias a minimiser always exists
    for cfg in (mj.UFMConfig("bce", 3, 1e-2, 1e-2, lambda_b=1e-2),
                mj.UFMConfig("bce", 3, 1e-2, 1e-2, bias=False)):
        res = mj.solve(every, cfg)
        assert res.certified and np.all(np.isfinite(res.b))


# -- THEORY §2c: rare label sets, tiny λ, saddles ----------------------------------------------------


def test_rare_label_sets_are_stationary():
    """A set with weight 1e-9 (and one with 1e-300): prototypes stationary to 1e-8 relative,
    whatever `π_s`; `‖∇F‖` alone would not see them."""
    base = mj.random_correlated(5, 2, max_multiplicity=2)
    w = np.asarray(base.weights).copy()
    w[3], w[7] = 1e-9, 1e-300
    d = mj.LabelDistribution(np.asarray(base.label_sets), w / w.sum(), 5)
    for loss in ("bce", "pal"):
        cfg = mj.UFMConfig(loss, 5, 5e-3, 5e-3)
        res = mj.solve(d, cfg)
        assert res.status == "certified", res.reason
        r = _prototype_residuals(res, d, cfg)
        assert np.max(r) <= 1e-8, (loss, r)
        assert np.linalg.norm(res.H[7]) > 1e-3  # a real prototype, not a frozen start


def test_tiny_lambda_mse_is_certified_and_exact_or_not_certified():
    d = mj.random_correlated(5, 4, max_multiplicity=2)
    cfg = mj.UFMConfig("mse", 5, 1e-8, 1e-8)
    res = mj.solve(d, cfg, warn=False)
    cf = mj.mse_closed_form(d, cfg)
    if res.certified:
        assert _rel(res.W @ res.W.T, cf.gram_W) <= 1e-6
        assert _rel(res.H @ res.H.T, cf.gram_H) <= 1e-6
    else:
        assert res.status in ("not_converged", "converged_uncertified") and res.reason


def test_dim_below_rank_is_named():
    d = mj.random_correlated(6, 0, max_multiplicity=2)
    res = mj.solve(d, mj.UFMConfig("pal", 2, 1e-3, 1e-3), warn=False)
    assert not res.certified and "below the rank" in res.reason


def test_tol_and_cert_tol_are_checked():
    d = mj.random_correlated(3, 0)
    for bad in (0.0, -1.0, float("inf"), float("nan"), 1.0, True, "1e-8"):
        with pytest.raises(InputError, match="tol"):
            mj.solve(d, mj.UFMConfig("mse", 3, 1e-2, 1e-2), tol=bad)
    with pytest.raises(InputError, match="not a normal positive float64"):
        mj.solve(d, mj.UFMConfig("mse", 3, 1e-320, 1e-320))


# -- hygiene: global JAX state, float32 inputs ----------------------------------------------------


_HYGIENE = textwrap.dedent("""
    import json, jax, jax.numpy as jnp, numpy as np
    import mlnc_jax as mj
    before = bool(jax.config.jax_enable_x64)
    d = mj.random_correlated(4, 0, max_multiplicity=2)
    cfg = mj.UFMConfig("pal", 4, 1e-2, 1e-2)
    p32 = mj.init_params(jax.random.PRNGKey(1), 4, d.num_sets, cfg, 0.1, jnp.float32)
    res = mj.solve(d, cfg, init=p32)
    print(json.dumps({"before": before, "after": bool(jax.config.jax_enable_x64),
                      "dtype": str(res.W.dtype), "status": str(res.status),
                      "x32": str(jnp.ones(2).dtype)}))
""")


def test_solve_leaves_jax_config_alone_and_casts_float32_init():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("JAX_ENABLE_X64", None)
    p = subprocess.run([sys.executable, "-c", _HYGIENE], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out == {"before": False, "after": False, "dtype": "float64", "status": "certified",
                   "x32": "float32"}


# -- memory: a per-sample problem with 100,000 rows ----------------------------------------------


# peak resident memory of this process from /proc (VmHWM): getrusage's ru_maxrss survives
# exec, so in a child of a large test process it would report the parent's memory
_PEAK = textwrap.dedent("""
    def peak_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
""")

_BIG = _PEAK + textwrap.dedent("""
    import json, numpy as np
    import mlnc_jax as mj
    d = mj.random_correlated(10, 0, max_multiplicity=3)
    Y, _ = mj.sample_labels(d, 100_000, seed=0)
    per = mj.LabelDistribution(Y.astype(np.float64), np.full(100_000, 1e-5), 10)
    res = mj.solve(per, mj.UFMConfig("pal", 16, 5e-3, 5e-3))
    print(json.dumps({"status": str(res.status), "rows": int(res.H.shape[0]),
                      "peak_mb": peak_mb()}))
""")


def test_hundred_thousand_rows_fit_in_two_gigabytes():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-c", _BIG], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["status"] == "certified" and out["rows"] == 100_000
    assert out["peak_mb"] <= 2048, out
