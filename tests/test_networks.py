"""Trained networks against the UFM (mlnc_jax.networks; THEORY §2, §3, §7)."""

import json
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlnc_jax as mj
from mlnc_jax import LOSSES, LabelDistribution, UFMParams, solve
from mlnc_jax import networks as nw
from mlnc_jax.model.errors import InputError
from mlnc_jax.model.ufm import per_sample_objective
from mlnc_jax.networks import training as nwt

jax.config.update("jax_enable_x64", True)

SETS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]], dtype=np.uint8)


def _toy(n=40, f=5, seed=0):
    rng = np.random.default_rng(seed)
    Y = SETS[rng.integers(0, len(SETS), n)]
    Y[: len(SETS)] = SETS                                  # every set present
    X = rng.normal(size=(n, f)) + 2.0 * Y @ rng.normal(size=(3, f))
    return X, Y


def _params(key, f, k, mlp):
    p = nw.init_network(key, f, k, mlp)
    # a non-zero bias everywhere, so the test sees every term
    return p._replace(b=jnp.linspace(-0.3, 0.4, k),
                      layers=tuple((A, c + 0.1) for A, c in p.layers))


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_objective_is_the_per_sample_ufm_objective_plus_weight_penalty(loss):
    X, Y = _toy(12)
    mlp = nw.MLPConfig(width=8, depth=2, dim=4)
    tc = nw.TrainConfig(loss, 3e-2, 7e-2, lambda_theta=1e-2)
    p = _params(jax.random.PRNGKey(1), X.shape[1], Y.shape[1], mlp)
    Xs, Yj = jnp.asarray(nw.standardize(X)), jnp.asarray(Y, jnp.float64)
    H = nw.features(p.layers, Xs, mlp.activation)
    # independent evaluation: the formula of the module docstring, sample by sample
    fn = LOSSES[loss]
    data = np.mean([float(fn(H[i] @ p.W.T + p.b, Yj[i])) for i in range(len(Y))])
    theta = sum(float(jnp.sum(v**2)) for v in jax.tree_util.tree_leaves(p.layers))
    expect = (data + 0.5 * tc.lambda_w * float(jnp.sum(p.W**2))
              + 0.5 * tc.lambda_h * float(jnp.sum(H**2)) / len(Y) + 0.5 * tc.lambda_theta * theta)
    got = float(nw.network_objective(p, Xs, Yj, mlp, tc))
    assert got == pytest.approx(expect, rel=1e-12)
    ufm = float(per_sample_objective(UFMParams(p.W, H, p.b), Yj, tc.ufm_config(mlp.dim)))
    assert got - 0.5 * tc.lambda_theta * theta == pytest.approx(ufm, rel=1e-12)
    # the compiled objective (traced loss index and λ's) is the same function
    assert float(nwt._value(p, Xs, Yj, mlp, nwt._dyn(tc), nwt._loss_table(tc.loss))) \
        == pytest.approx(got, rel=1e-12)


def test_gradient_of_training_objective_matches_finite_differences():
    X, Y = _toy(10)
    mlp = nw.MLPConfig(width=6, depth=2, dim=3, activation="softplus")
    tc = nw.TrainConfig("bce", 5e-3, 5e-3, lambda_theta=1e-3)
    p = _params(jax.random.PRNGKey(2), X.shape[1], Y.shape[1], mlp)
    Xs, Yj = jnp.asarray(nw.standardize(X)), jnp.asarray(Y, jnp.float64)
    f = lambda q: nwt._objective(q, Xs, Yj, mlp, nwt._dyn(tc), nwt._loss_table(tc.loss))
    g = jax.grad(f)(p)
    leaves, tree = jax.tree_util.tree_flatten(p)
    keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    v = jax.tree_util.tree_unflatten(tree, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
    eps = 1e-5
    shift = lambda s: jax.tree_util.tree_map(lambda a, b: a + s * b, p, v)
    fd = (f(shift(eps)) - f(shift(-eps))) / (2 * eps)
    ad = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(v)))
    assert float(fd) == pytest.approx(float(ad), rel=1e-7)
    # one Adam step reports F_net before the step and changes the parameters
    import optax
    q, _, value = nw.adam_step(p, optax.adam(tc.learning_rate).init(p), Xs, Yj, mlp, tc)
    assert float(value) == pytest.approx(float(nw.network_objective(p, Xs, Yj, mlp, tc)), rel=1e-12)
    assert float(f(q)) < float(f(p))


def test_set_index_means_subsample_and_certified_switch():
    X, Y = _toy(30)
    dist = LabelDistribution.from_label_matrix(Y)
    idx = nw.sample_set_index(Y, dist)
    assert np.array_equal(np.asarray(dist.label_sets)[idx], Y)
    H = np.random.default_rng(0).normal(size=(30, 4))
    mu = nw.label_set_means(H, idx, dist.num_sets)
    for s in range(dist.num_sets):
        assert np.allclose(mu[s], H[idx == s].mean(0))
    Yr = np.zeros((50, 4), np.uint8)
    Yr[:, 0] = 1
    Yr[7, 3] = 1                                     # a class in one sample only
    sub = nw.subsample(Yr, 10, seed=1)
    assert Yr[sub, 3].sum() == 1 and len(set(sub)) == len(sub)
    with pytest.raises(InputError):
        nw.sample_set_index(np.array([[1, 1, 1]]), dist)



def test_end_to_end_lower_bound_and_approach_to_the_ufm():
    """λ_θ = 0: F_net ≥ F(W, means, b) ≥ F*_UFM (module docstring); a network wider than the
    number of samples trained to its terminal phase lands near the UFM optimum."""
    X, Y = _toy(24)
    dist = LabelDistribution.from_label_matrix(Y)
    tc = nw.TrainConfig("pal", 5e-2, 5e-2, adam_steps=300, learning_rate=1e-2,
                        lbfgs_steps=1500, num_records=10)
    mlp = nw.MLPConfig(width=32, depth=2, dim=4)
    config = tc.ufm_config(mlp.dim)
    ufm = solve(dist, config, seed=0, tol=1e-10)
    assert ufm.certified
    idx = nw.sample_set_index(Y, dist)
    Xs = jnp.asarray(nw.standardize(X))
    obs = lambda p: [nw.compare_network(nw.features(p.layers, Xs), p.W, p.b, idx, dist, ufm,
                                        config).gram_h_error]
    r = nw.train(X, Y, mlp, tc, seed=0, observe=obs)
    tr = r.trace
    assert tr.observed.shape == (len(tr.step), 1) and np.all(np.diff(tr.step) > 0)
    lb = tr.objective[tr.phase == 1]
    assert np.all(np.diff(lb) <= 1e-12 * np.abs(lb[1:]))   # L-BFGS with a line search descends
    H = nw.features(r.params.layers, Xs)
    c = nw.compare_network(H, r.params.W, r.params.b, idx, dist, ufm, config)
    assert c.net_objective == pytest.approx(r.objective, rel=1e-12)
    tol = 1e-9 * abs(c.ufm_objective)                # UFM solved to ‖∇F‖ ≤ 1e-10
    assert c.net_objective >= c.means_objective - 1e-12
    assert c.means_objective >= c.ufm_objective - tol
    for obj in tr.objective:
        assert obj >= c.ufm_objective - tol
    assert r.terminal
    # terminal phase: the objective reaches F* (the global value, §3) ...
    assert c.net_objective - c.ufm_objective <= 1e-6 * abs(c.ufm_objective)
    # ... so the invariants of §7 follow (errors ~ sqrt(gap) near a minimiser unique up to
    # rotation), and the samples collapse onto their label-set means (NC1, §2)
    assert c.gram_h_error <= 1e-3 and c.gram_w_error <= 1e-3 and c.logit_error <= 1e-3
    assert c.within_ratio <= 1e-6


def test_shipped_features_match_their_sources():
    src = json.loads(resources.files("mlnc_jax.io.data").joinpath("features", "SOURCES.json")
                     .read_text())["datasets"]
    assert nw.feature_datasets() == sorted(src)
    for name, s in src.items():
        X, Y, names = nw.load_features(name)
        assert X.shape == (s["N"], s["num_features"]) and Y.shape == (s["N"], s["num_labels"])
        assert len(names) == s["num_labels"]
        assert LabelDistribution.from_label_matrix(Y).num_sets == s["distinct_label_sets"]
    with pytest.raises(InputError):
        nw.load_features("nope")


def test_a_user_loss_trains_a_network_and_its_objective_decreases():
    # class-weighted BCE: a Loss record from a plain function, not one of LOSSES
    cw = jnp.array([1.0, 2.0, 0.5])
    wbce = mj.Loss.from_function(
        "weighted_bce", lambda z, y: jnp.sum(cw * (jax.nn.softplus(z) - y * z)))
    assert wbce not in LOSSES.values()
    X, Y = _toy()
    mlp = nw.MLPConfig(width=8, depth=2, dim=3)
    tc = nw.TrainConfig(wbce, 1e-2, 1e-2, adam_steps=60, learning_rate=1e-2, lbfgs_steps=40)
    r = nw.train(X, Y, mlp, tc, seed=0)
    obj = np.asarray(r.trace.objective)
    assert np.all(np.isfinite(obj)) and obj[-1] < 0.9 * obj[0], obj
    # the objective the loop minimised is the user loss's network objective, not a built-in's
    Xs = jnp.asarray(nw.standardize(X))
    want = float(nw.network_objective(r.params, Xs, jnp.asarray(Y, jnp.float64), mlp, tc))
    assert abs(r.objective - want) <= 1e-10 * abs(want)
    other = float(nw.network_objective(r.params, Xs, jnp.asarray(Y, jnp.float64), mlp,
                                       tc._replace(loss="bce")))
    assert abs(other - want) > 1e-3
