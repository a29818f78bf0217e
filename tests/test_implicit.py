"""Derivatives of the certified optimum (THEORY §8) against finite differences of certified
solves, the envelope formula and the MSE closed form (§4); vmap; the rank-change refusal."""

import os
import subprocess
import sys
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlnc_jax as mj
from mlnc_jax.analysis.metrics import tagwise_residuals

LAM = 5e-3
TOL = 1e-12


@cache
def _dist(name):
    if name.startswith("random"):
        return mj.random_correlated(4, int(name[-1]))
    return mj.load_real(name)


def _config(loss, dist):
    return mj.UFMConfig(loss, dist.num_classes, LAM, LAM)


def _probe(dist, seed=7):
    """Fixed random symmetric matrices for the Gram and logit functionals."""
    rng = np.random.default_rng(seed)
    K, T = dist.num_classes, dist.num_sets
    A = rng.normal(size=(K, K))
    B = rng.normal(size=(T, T))
    return A + A.T, B + B.T, rng.normal(size=(T, K))


def _functionals(gram_W, gram_H, logits, objective, dist, xp):
    A, B, Cz = _probe(dist)
    if xp is np:
        r = _tagwise_np(gram_H, dist)
    else:
        r = tagwise_residuals(gram_H, dist.label_sets)[0]
    return [objective, xp.sum(A * gram_W), xp.sum(B * gram_H), xp.sum(Cz * logits),
            xp.sqrt(xp.mean(r * r))]


def _tagwise_np(gram_H, dist):
    """The same residuals from `synthesis_report` on a factor of the Gram (independent code)."""
    ev, V = np.linalg.eigh(gram_H)
    H = V * np.sqrt(np.maximum(ev, 0.0))
    rep = mj.synthesis_report(H, dist)
    r = rep.tagwise_residual
    return r[np.isfinite(r)]


def _q_traced(loss, name):
    """`(w, λ_W, λ_H) -> functionals` through `mj.solve` on traced inputs (jitted)."""
    dist = _dist(name)
    cfg = _config(loss, dist)

    def q(w, lw, lh):
        d = mj.LabelDistribution(dist.label_sets, w, dist.num_classes)
        r = mj.solve(d, cfg._replace(lambda_w=lw, lambda_h=lh), tol=TOL)
        P = np.eye(dist.num_classes) - (1.0 / dist.num_classes if loss == "pal" else 0.0)
        z = (r.H @ r.W.T + r.b) @ P
        return jnp.stack(_functionals(r.W @ r.W.T, r.H @ r.H.T, z, r.objective, dist, jnp))

    return q, dist, cfg


def _q_host(loss, dist, cfg, w, lw, lh):
    """The same functionals from a concrete certified solve at normalised weights."""
    d = mj.LabelDistribution(np.asarray(dist.label_sets), w / w.sum(), dist.num_classes)
    r = mj.solve(d, cfg._replace(lambda_w=lw, lambda_h=lh), tol=TOL)
    assert r.certified, r.reason
    P = np.eye(dist.num_classes) - (1.0 / dist.num_classes if loss == "pal" else 0.0)
    z = (r.H @ r.W.T + r.b) @ P
    return np.array(_functionals(r.W @ r.W.T, r.H @ r.H.T, z, r.objective, dist, np))


# MSE derivatives are checked against the exact closed form below
CASES = [("pal", "scene"), ("bce", "random2")]


@pytest.mark.parametrize("loss,name", CASES)
def test_jacobians_match_central_differences(loss, name):
    q, dist, cfg = _q_traced(loss, name)
    w0 = np.asarray(dist.weights, dtype=np.float64)
    J = jax.jit(jax.jacrev(q, argnums=(0, 1, 2)))(jnp.asarray(w0), LAM, LAM)
    Jw, Jl, Jh = (np.asarray(j) for j in J)
    rng = np.random.default_rng(0)
    v = w0 * rng.normal(size=w0.shape)       # relative perturbations keep weights positive
    h = 1e-4
    fd = (_q_host(loss, dist, cfg, w0 + h * v, LAM, LAM)
          - _q_host(loss, dist, cfg, w0 - h * v, LAM, LAM)) / (2 * h)
    rel = np.abs(fd - Jw @ v) / np.maximum(np.abs(fd), 1e-3 * np.abs(Jw).sum(1) * w0.max())
    assert np.max(rel) <= 1e-5, (rel, fd, Jw @ v)
    for k, Jk in ((0, Jl), (1, Jh)):
        lp = [LAM, LAM]
        lm = [LAM, LAM]
        lp[k] *= 1 + h
        lm[k] *= 1 - h
        fd = (_q_host(loss, dist, cfg, w0, *lp) - _q_host(loss, dist, cfg, w0, *lm)) / (2 * h * LAM)
        rel = np.abs(fd - Jk) / np.maximum(np.abs(fd), 1e-8)
        assert np.max(rel) <= 1e-5, (k, rel, fd, Jk)
    # jacfwd agrees with jacrev
    Jf = jax.jit(jax.jacfwd(q, argnums=0))(jnp.asarray(w0), LAM, LAM)
    np.testing.assert_allclose(np.asarray(Jf), Jw, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("loss,name", [("pal", "random1")])
def test_objective_gradient_is_the_envelope_formula(loss, name):
    dist = _dist(name)
    cfg = _config(loss, dist)
    w0 = jnp.asarray(dist.weights)

    def F(w, lw, lh):
        d = mj.LabelDistribution(dist.label_sets, w, dist.num_classes)
        return mj.optimum(d, cfg, lambda_w=lw, lambda_h=lh).objective

    gw, gl, gh = jax.grad(F, argnums=(0, 1, 2))(w0, LAM, LAM)
    o = mj.optimum(dist, cfg)
    W, H, b = (np.asarray(x) for x in (o.W, o.H, o.b))
    pi = np.asarray(dist.weights)
    z = H @ W.T + b
    l = np.asarray(cfg.loss_record.derivatives(jnp.asarray(z), jnp.asarray(dist.label_sets))[0])
    e = l + 0.5 * LAM * np.sum(H * H, 1)
    env = (e - pi @ e) / pi.sum()             # chained through π = w/Σw
    assert np.max(np.abs(np.asarray(gw) - env)) <= 1e-8 * np.max(np.abs(env))
    assert abs(float(gl) - 0.5 * np.sum(W * W)) <= 1e-8 * np.sum(W * W)
    assert abs(float(gh) - 0.5 * pi @ np.sum(H * H, 1)) <= 1e-8 * (pi @ np.sum(H * H, 1))


def _mse_closed_form_jnp(Y, w, lw, lh):
    """THEORY §4 (free bias, d ≥ K) in jax.numpy: `(F*, W Wᵀ, logits)`."""
    pi = w / jnp.sum(w)
    p = pi @ Y
    C = (Y * pi[:, None]).T @ Y - jnp.outer(p, p)
    lam, U = jnp.linalg.eigh(C)
    tau = jnp.sqrt(lw * lh)
    act = lam > tau**2
    sq = jnp.sqrt(jnp.where(act, lam, 1.0))
    s = jnp.where(act, sq - tau, 0.0)
    phi = jnp.where(act, 1.0 - tau / sq, 0.0)
    F = jnp.sum(jnp.where(act, tau * sq - tau**2 / 2, lam / 2))
    gram_W = jnp.sqrt(lh / lw) * (U * s) @ U.T
    z = (Y - p) @ ((U * phi) @ U.T) + p
    return F, gram_W, z


def test_mse_derivatives_match_the_closed_form():
    dist = _dist("random3")
    cfg = _config("mse", dist)
    Y = jnp.asarray(dist.label_sets)
    w0 = jnp.asarray(dist.weights)

    def from_solve(w, lw, lh):
        d = mj.LabelDistribution(dist.label_sets, w, dist.num_classes)
        o = mj.optimum(d, cfg, lambda_w=lw, lambda_h=lh)
        return o.objective, o.gram_W, o.logits

    Js = jax.jacfwd(from_solve, argnums=(0, 1, 2))(w0, LAM, LAM)
    Jc = jax.jacfwd(lambda w, a, b: _mse_closed_form_jnp(Y, w, a, b), argnums=(0, 1, 2))(w0, LAM, LAM)
    for js, jc in zip(jax.tree_util.tree_leaves(Js), jax.tree_util.tree_leaves(Jc)):
        js, jc = np.asarray(js), np.asarray(jc)
        assert np.max(np.abs(js - jc)) <= 1e-7 * max(np.max(np.abs(jc)), 1e-12)


def test_vmap_over_a_batch_of_distributions():
    dists = [_dist("random1"), _dist("random2")]
    assert dists[0].num_sets == dists[1].num_sets
    Y = jnp.stack([jnp.asarray(d.label_sets) for d in dists])
    w = jnp.stack([jnp.asarray(d.weights) for d in dists])
    cfg = _config("pal", dists[0])

    def q(Y, w):
        r = mj.solve(mj.LabelDistribution(Y, w, 4), cfg, tol=TOL)
        return jnp.sum(jnp.triu(r.W @ r.W.T)) + r.objective

    g = jax.vmap(jax.grad(q, argnums=1))(Y, w)
    for i in range(2):
        gi = jax.grad(q, argnums=1)(Y[i], w[i])
        # two certified solves (batched and alone) agree to the optimum's accuracy, about
        # TOL / LAM (a residual over the smallest curvature λ), and so do their derivatives
        np.testing.assert_allclose(np.asarray(g[i]), np.asarray(gi), rtol=10 * TOL / LAM)


def test_gauge_is_horizontal():
    dist = _dist("random1")
    cfg = _config("pal", dist)
    v = jnp.asarray(np.random.default_rng(1).normal(size=dist.num_sets)) * dist.weights

    def Wb(w):
        o = mj.optimum(mj.LabelDistribution(dist.label_sets, w, 4), cfg)
        return o.W, o.b

    (W, b), (dW, db) = jax.jvp(Wb, (jnp.asarray(dist.weights),), (v,))
    S = np.asarray(W.T @ dW)
    assert np.max(np.abs(S - S.T)) <= 1e-8 * np.max(np.abs(S))   # Wᵀ Ẇ symmetric
    assert abs(float(jnp.sum(db))) <= 1e-8 * float(jnp.max(jnp.abs(db)))  # PAL: 1ᵀḃ = 0


def test_rank_change_is_refused_with_the_gap():
    dist = _dist("random3")
    C = np.asarray(mj.spectrum_arrays(np.asarray(dist.label_sets), np.asarray(dist.weights)).covariance)
    lam_j = np.sort(np.linalg.eigvalsh(C))[-2]
    lw = float(np.sqrt(lam_j))                     # λ_W λ_H = an eigenvalue of C: threshold
    cfg = mj.UFMConfig("mse", 4, lw, lw)
    with pytest.raises(mj.RankChangeError, match="eigenvalue gap"):
        jax.grad(lambda w: mj.optimum(mj.LabelDistribution(dist.label_sets, w, 4), cfg).objective)(
            jnp.asarray(dist.weights))
    with pytest.raises(Exception, match="rank change"):
        jax.jit(jax.grad(lambda w: mj.optimum(
            mj.LabelDistribution(dist.label_sets, w, 4), cfg).objective))(jnp.asarray(dist.weights))


@pytest.mark.parametrize("factor", [1.0, 1 + 1e-7])
def test_pal_collapse_threshold_is_refused(factor):
    dist = _dist("random1")
    lw = float(np.sqrt(mj.collapse_threshold(dist, "pal") * factor))   # §3 threshold
    cfg = mj.UFMConfig("pal", 4, lw, lw)
    with pytest.raises(mj.RankChangeError, match="eigenvalue gap"):
        jax.grad(lambda w: mj.solve(mj.LabelDistribution(dist.label_sets, w, 4), cfg,
                                    tol=TOL).objective)(jnp.asarray(dist.weights))


def test_solve_batch_refuses_tracers_and_float32_is_refused():
    dist = _dist("random1")
    cfg = _config("pal", dist)
    with pytest.raises(mj.InputError, match="differentiate"):
        jax.grad(lambda lw: mj.solve_batch([dist], cfg, lambda_w=lw).objective[0])(LAM)
    with jax.enable_x64(False):
        with pytest.raises(mj.InputError, match="float64"):
            mj.optimum(dist, cfg)


def test_pal_loss_weights_match_central_differences():
    dist = _dist("random1")
    cfg = _config("pal", dist)
    Y = np.asarray(dist.label_sets)
    A = _probe(dist)[0]

    def q(c):
        return jnp.sum(A * mj.optimum(dist, cfg, loss_weights=c, tol=TOL).gram_W)

    c0 = np.ones(dist.num_sets)
    g = np.asarray(jax.grad(q)(jnp.asarray(c0)))
    v = np.random.default_rng(3).normal(size=c0.shape)
    h = 1e-4

    def host(c):  # PAL is homogeneous in y: loss weight c_s = label row c_s y_s
        r = mj.solve(mj.LabelDistribution(Y * c[:, None], np.asarray(dist.weights), 4), cfg,
                     tol=TOL)
        assert r.certified
        return float(np.sum(A * (r.W @ r.W.T)))

    fd = (host(c0 + h * v) - host(c0 - h * v)) / (2 * h)
    assert abs(fd - g @ v) <= 1e-5 * abs(fd)
    with pytest.raises(mj.InputError, match="pal"):
        mj.optimum(dist, _config("bce", dist), loss_weights=c0)


def test_grad_matches_differences_of_the_same_function():
    """Perturbing one raw weight (no renormalisation by the caller): concrete solves
    normalise too, so `f` is one function whether its input is traced or not."""
    dist = _dist("random2")
    cfg = _config("bce", dist)
    A = _probe(dist)[0]

    def f(w):
        r = mj.solve(mj.LabelDistribution(dist.label_sets, w, 4), cfg, tol=TOL)
        return r.objective + jnp.sum(A * (r.W @ r.W.T))

    w0 = np.asarray(dist.weights)
    g = np.asarray(jax.grad(f)(jnp.asarray(w0)))
    assert abs(g @ w0) <= 1e-8 * np.abs(g).max()          # Σ_s w_s ∂f/∂w_s = 0
    for s in (0, 7):
        h = 1e-4 * w0[s]
        wp, wm = w0.copy(), w0.copy()
        wp[s] += h
        wm[s] -= h
        fd = (float(f(wp)) - float(f(wm))) / (2 * h)
        assert abs(fd - g[s]) <= 1e-5 * abs(fd)


@pytest.mark.parametrize("cfg", [mj.UFMConfig("mse", 4, LAM, LAM, bias=False),
                                 mj.UFMConfig("pal", 4, LAM, LAM, lambda_b=1e-2)])
def test_no_bias_and_bias_decay(cfg):
    dist = _dist("random2")
    A = np.random.default_rng(0).normal(size=(dist.num_sets, 4))

    def f(w, lb):
        r = mj.solve(mj.LabelDistribution(dist.label_sets, w, 4), cfg._replace(lambda_b=lb),
                     tol=TOL)
        return jnp.sum(A * (r.H @ r.W.T + r.b)) + r.objective

    w0 = np.asarray(dist.weights)
    g, gl = jax.grad(f, argnums=(0, 1))(jnp.asarray(w0), cfg.lambda_b)
    v = w0 * np.random.default_rng(1).normal(size=w0.shape)
    h = 1e-4
    fd = (float(f(w0 + h * v, cfg.lambda_b)) - float(f(w0 - h * v, cfg.lambda_b))) / (2 * h)
    assert abs(fd - np.asarray(g) @ v) <= 1e-5 * abs(fd)
    if cfg.lambda_b > 0:
        fl = (float(f(w0, cfg.lambda_b * (1 + h))) - float(f(w0, cfg.lambda_b * (1 - h)))) \
            / (2 * h * cfg.lambda_b)
        assert abs(fl - float(gl)) <= 1e-5 * abs(fl)


@pytest.mark.parametrize("loss,name", [("pal", "random1"), ("bce", "random2"),
                                       ("mse", "random1")])
def test_matrix_free_derivatives_equal_the_exact_paths(loss, name):
    """The tangent solve follows `method`: CG on all blocks (matrix-free) and on the Schur
    complement (exact) are two solutions of one linear system, in one gauge (Wᵀ Ẇ symmetric).
    1e-7 relative is the tangent solver's own acceptance bound (`_CG_ACCEPT`)."""
    dist = _dist(name)
    cfg = _config(loss, dist)
    v = jnp.asarray(np.random.default_rng(3).normal(size=dist.num_sets)) * dist.weights

    def outs(method):
        def f(w):
            o = mj.optimum(mj.LabelDistribution(dist.label_sets, w, dist.num_classes), cfg,
                           method=method)
            return o.gram_W, o.gram_H, o.logits, o.b, o.W
        return jax.jvp(f, (jnp.asarray(dist.weights),), (v,))

    (_, exact), (primal, free) = outs("exact"), outs("matrix_free")
    for a, b in zip(exact[:4], free[:4]):  # W itself depends on the representative
        a, b = np.asarray(a), np.asarray(b)
        assert np.linalg.norm(a - b) <= 1e-7 * max(np.linalg.norm(a), 1e-12), (loss, a, b)
    S = np.asarray(primal[4].T @ free[4])
    assert np.max(np.abs(S - S.T)) <= 1e-8 * np.max(np.abs(S))   # Wᵀ Ẇ symmetric


def test_orbit_projection_is_the_least_squares_projection_onto_the_rotations():
    """THEORY §8b: the Lyapunov solve equals the projection onto an explicit skew basis."""
    from mlnc_jax.engine.hessian import orbit_projection

    rng = np.random.default_rng(0)
    K, T, d = 5, 7, 4
    W, U, VW, VU = (rng.normal(size=s) for s in ((K, d), (T, d), (K, d), (T, d)))
    W[:, -1] = 0.0  # a direction W misses: U still reaches it
    iu, ju = np.triu_indices(d, 1)
    basis = []
    for i, j in zip(iu, ju):
        A = np.zeros((d, d))
        A[i, j], A[j, i] = 1.0, -1.0
        basis.append(np.concatenate([(W @ A).ravel(), (U @ A).ravel()]))
    B = np.stack(basis, 1)
    target = np.concatenate([VW.ravel(), VU.ravel()])
    ref = B @ np.linalg.lstsq(B, target, rcond=None)[0]
    pW, pU = orbit_projection((jnp.asarray(W), jnp.asarray(U)), (jnp.asarray(VW), jnp.asarray(VU)))
    got = np.concatenate([np.asarray(pW).ravel(), np.asarray(pU).ravel()])
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs,needle", [({"method": "nonsense"}, "method"),
                                           ({"max_cg": 0}, "max_cg"),
                                           ({"devices": []}, "devices is empty"),
                                           ({"init_scale": -1.0}, "init_scale"),
                                           ({"init": "nonsense"}, "init must be")])
def test_options_are_refused_under_grad_as_outside(kwargs, needle):
    dist = _dist("random1")
    cfg = _config("pal", dist)
    with pytest.raises(mj.InputError, match=needle) as outside:
        mj.solve(dist, cfg, **kwargs)

    def f(w):
        d = mj.LabelDistribution(dist.label_sets, w, dist.num_classes)
        return mj.solve(d, cfg, **kwargs).objective

    with pytest.raises(mj.InputError, match=needle) as inside:
        jax.grad(f)(jnp.asarray(dist.weights))
    assert str(inside.value) == str(outside.value)


_LANES_SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import mlnc_jax as mj
dist = mj.load_real("emotions")
cfg = mj.UFMConfig("bce", 6, 1e-2, 3e-3)
gram = lambda th: mj.optimum(dist, cfg, lambda_w=th[0], lambda_h=th[1]).gram_H
th = jnp.array([1e-2, 3e-3])
J = np.asarray(jax.jacfwd(gram)(th))                     # two tangent lanes in one solve
cols = [np.asarray(jax.jvp(gram, (th,), (e,))[1]) for e in jnp.eye(2)]
err = max(np.max(np.abs(J[..., i] - c)) / np.max(np.abs(c)) for i, c in enumerate(cols))
print("nan", int(np.isnan(J).sum()), "err", err)
"""


def test_jacfwd_lanes_agree_at_default_xla_optimisation():
    """`jax.jacfwd` over `(λ_W, λ_H)` vmaps the tangent solve; each lane must equal its own
    `jax.jvp`. At XLA's default CPU optimisation (not the suite's level 0: this runs in a
    fresh process with default flags) the vector–matrix `dot` of the bias rows once gave
    wrong values past the first lane (NaN after CG failed); `hessian.row_sum` avoids it."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", _LANES_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    nan, err = out.stdout.split()[1], float(out.stdout.split()[3])
    assert nan == "0" and err < 1e-8, out.stdout
