"""Batched solves (mlnc_jax.solve_batch): equality with one-by-one solves, padding, λ grids,
convergence reporting, no recompilation, and sharding over several (virtual) devices."""

import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import mlnc_jax as mj
from mlnc_jax.engine import placement
from mlnc_jax.engine.batch import solve_batch
from mlnc_jax.engine.requests import batch_grid
from mlnc_jax.engine.result import BatchSolveResult, ConvergenceWarning
from mlnc_jax.model.errors import InputError

CFG = mj.UFMConfig("pal", 3, 0.01, 0.01)


def _dists():
    """Five K = 4 distributions with different supports (T = 10, 10, 10, 10, 4)."""
    return [mj.random_correlated(4, 0, max_multiplicity=2),
            mj.random_correlated(4, 1, max_multiplicity=2),
            mj.singleton_imbalance(4, 5.0, multiplicity_mass={1: 0.7, 2: 0.3}),
            mj.balanced(4, {1: 0.6, 2: 0.4}),
            mj.random_correlated(4, 7, max_multiplicity=1)]


@pytest.fixture(scope="module")
def pal_batch():
    dists = _dists()
    seeds = [3, 1, 4, 1, 5]
    return dists, seeds, solve_batch(dists, CFG, seeds=seeds, tol=1e-10, progress=False)


def _invariants(W, H, b, T):
    W, H, b = (np.asarray(x, dtype=np.float64) for x in (W, H, b))
    H = H[:T]
    z = H @ W.T + b
    z = z - z.mean(1, keepdims=True)  # pal is invariant to z + c·1 (b is free along 1)
    return W @ W.T, H @ H.T, z


def _rel(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


def test_matches_solve_one_by_one(pal_batch, solve_cached):
    dists, seeds, res = pal_batch
    assert isinstance(res, BatchSolveResult) and res.batch_size == 5
    assert res._replace(seconds=0.0).seconds == 0.0
    T_pad = max(d.num_sets for d in dists)
    assert res.W.shape == (5, 4, 3) and res.H.shape == (5, T_pad, 3) and res.b.shape == (5, 4)
    assert res.mask.shape == (5, T_pad)
    assert bool(np.all(res.converged)) and float(np.max(res.grad_norm)) <= 1e-10
    for i, (d, s) in enumerate(zip(dists, seeds)):
        one = solve_cached(d, CFG, seed=s)
        assert bool(one.converged)
        for a, b in zip(_invariants(res.W[i], res.H[i], res.b[i], d.num_sets),
                        _invariants(one.W, one.H, one.b, d.num_sets)):
            assert _rel(a, b) < 1e-6
        assert abs(float(res.objective[i]) - float(one.objective)) < 1e-11
        assert abs(float(res.certificate[i]) - float(one.certificate)) < 1e-6
        assert abs(float(res.certificate[i]) - 1) < 1e-6
        # the reported numbers are those of the package's own objective and certificate
        p = mj.UFMParams(res.W[i], res.H[i, :d.num_sets], res.b[i])
        Y, w = jnp.asarray(d.label_sets), jnp.asarray(d.weights)
        assert abs(float(mj.objective(p, Y, w, CFG)) - float(res.objective[i])) < 1e-12
        assert abs(float(mj.certificate(p, Y, w, CFG)) - float(res.certificate[i])) < 1e-9
        item = res.item(i)
        assert item.H.shape == (d.num_sets, 3) and float(item.objective) == float(res.objective[i])


def test_padding_rows_and_mask(pal_batch):
    dists, _, res = pal_batch
    for i, d in enumerate(dists):
        m = np.asarray(res.mask[i])
        assert m[:d.num_sets].all() and not m[d.num_sets:].any()
        assert np.all(np.asarray(res.H[i])[d.num_sets:] == 0.0)
        # the prototype rows keep the distribution's own order: row s fits label set s
        assert np.all(np.abs(np.asarray(res.H[i])[:d.num_sets]).sum(1) > 0)


def test_solve_is_the_one_problem_batch():
    """`solve(dist, cfg, seed)` is `solve_batch([dist], cfg, seeds=[seed]).item(0)`: the same
    start `init_params(PRNGKey(seed), K, T)`, the same program, the same numbers."""
    d = _dists()[1]
    one = mj.solve(d, CFG, seed=7)
    batch = solve_batch([d], CFG, seeds=[7], progress=False).item(0)
    for k in ("W", "H", "b", "objective", "certificate", "residual"):
        assert np.max(np.abs(np.asarray(getattr(one, k)) - np.asarray(getattr(batch, k)))) <= 1e-12, k
    assert one.steps == batch.steps and one.status == batch.status == "certified"


def test_lambda_grid_bias_free_mse_matches_closed_form():
    dist = mj.random_correlated(4, 2, max_multiplicity=2)
    cfg = mj.UFMConfig("mse", 3, 0.01, 0.01, bias=False)
    grid = batch_grid([dist], lambda_w=[0.005, 0.02], lambda_h=[0.01, 0.03], seeds=[0, 1])
    assert grid.shape == (1, 2, 2, 2) and len(grid.distributions) == 8
    assert list(grid.index[5]) == [0, 1, 0, 1]
    # no bias: Σ = M has rank 4 > d = 3, so the d-constrained optimum (the closed form keeps
    # the top d directions) is converged but, rightly, not certified (THEORY §2c)
    with pytest.warns(ConvergenceWarning, match="d = 3 is below the rank"):
        res = solve_batch(config=cfg, tol=1e-10, progress=False, **grid.kwargs())
    assert bool(np.all(res.converged)) and np.all(np.asarray(res.b) == 0)
    assert set(res.status) == {"converged_uncertified"}
    for i in range(8):
        c = cfg._replace(lambda_w=float(grid.lambda_w[i]), lambda_h=float(grid.lambda_h[i]))
        cf = mj.mse_closed_form(dist, c)
        W, H = np.asarray(res.W[i]), np.asarray(res.H[i])
        assert _rel(W @ W.T, cf.gram_W) < 1e-7 and _rel(H @ H.T, cf.gram_H) < 1e-7
        assert abs(float(res.objective[i]) - cf.objective) < 1e-11


def test_other_losses_are_certified():
    dists = _dists()[:2]
    for loss in ("bce", "pal_normalized"):  # d = K: the certificate needs d ≥ rank
        res = solve_batch(dists, CFG._replace(loss=loss, dim=4), seeds=[0, 1], tol=1e-10,
                          lambda_w=[0.01, 0.02], progress=False)
        assert bool(np.all(res.converged))
        assert np.all(np.abs(np.asarray(res.certificate) - 1) < 1e-6)


def _compiled_programs():
    """Entries in the compile caches of the slot programs (JAX's own count, one per trace)."""
    return {f.__name__: f._cache_size() for f in (placement._init_slots, placement._advance,
                                                  placement._refill, placement._summaries)}


def test_no_recompilation_for_same_shapes(pal_batch):
    dists, _, _ = pal_batch
    counts = _compiled_programs()
    # same shapes: other distributions (same K and padded T), λ values and seeds
    other = [mj.random_correlated(4, s, max_multiplicity=2) for s in (11, 12, 13, 14)] + [dists[4]]
    res = solve_batch(other, CFG, seeds=[9, 8, 7, 6, 5], lambda_w=[0.01, 0.02, 0.01, 0.03, 0.01],
                      lambda_h=0.02, tol=1e-10, progress=False)
    assert bool(np.all(res.converged))
    assert _compiled_programs() == counts, (counts, _compiled_programs())


def test_nonconverged_problems_are_reported_by_index():
    dists = _dists()
    with pytest.warns(ConvergenceWarning, match=r"5 of 5 problems are not certified: "
                      r"0: not_converged \(max_steps = 4 spent"):
        res = solve_batch(dists, CFG, seeds=0, max_steps=4, progress=False)  # needs > 10
    assert not np.any(np.asarray(res.converged)) and not np.any(res.certified)
    assert list(res.status) == ["not_converged"] * 5 and np.all(res.steps == 4)


def test_progress_bar_counts_to_the_end_and_changes_nothing(capsys, pal_batch):
    dists, seeds, quiet = pal_batch
    res = solve_batch(dists, CFG, seeds=seeds, tol=1e-10, progress=True)
    err = capsys.readouterr().err
    # the bar starts from zero and ends with every problem finished and the worst final
    # residual
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    worst = max(float(r) for r in quiet.residual)
    assert "5/5" in last and f"worst residual {worst:.1e}" in last, last
    assert "0/5" in err
    for k in ("W", "H", "b", "objective", "residual", "certificate", "steps", "status"):
        assert np.array_equal(np.asarray(getattr(res, k)), np.asarray(getattr(quiet, k))), k


@pytest.mark.parametrize("kwargs,word", [
    (dict(seeds=[0, 1]), "batch sizes disagree"),
    (dict(lambda_w=-1.0), "lambda_w"),
    (dict(lambda_h=[0.01, 0.0, 0.01, 0.01, 0.01]), "lambda_h"),
    (dict(init="warm"), "init"),
    (dict(tol=0.0), "tol"),
    (dict(max_steps=0), "max_steps"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_inputs(kwargs, word):
    with pytest.raises(InputError, match=word):
        solve_batch(_dists(), CFG, progress=False, **kwargs)


def test_bad_distributions():
    with pytest.raises(InputError, match="classes"):
        solve_batch([mj.random_correlated(4, 0), mj.random_correlated(3, 0)], CFG)
    with pytest.raises(InputError, match="empty"):
        solve_batch([], CFG)
    with pytest.raises(InputError, match="pal_normalized"):
        empty = mj.LabelDistribution.from_sets([[], [0]], [0.5, 0.5], 3)
        solve_batch([empty], CFG._replace(loss="pal_normalized"))


_SHARDED = textwrap.dedent("""
    import json
    import jax, numpy as np
    import mlnc_jax as mj
    from mlnc_jax.engine.batch import solve_batch
    cfg = mj.UFMConfig("pal", 2, 0.02, 0.01)
    dists = [mj.random_correlated(3, s, max_multiplicity=2) for s in range(4)]
    dists.append(mj.random_correlated(3, 9, max_multiplicity=1))
    kw = dict(seeds=[0, 1, 2, 3, 4], lambda_w=[0.02, 0.01, 0.02, 0.03, 0.02], tol=1e-10,
              progress=False)
    many = solve_batch(dists, cfg, devices=jax.devices(), batch_size=4, **kw)
    one = solve_batch(dists, cfg, devices=jax.devices()[:1], batch_size=8, **kw)
    diff = {k: float(np.max(np.abs(np.asarray(getattr(many, k), float)
                                   - np.asarray(getattr(one, k), float))))
            for k in ("objective", "residual", "certificate", "steps")}
    # the optimum is unique up to a rotation of the feature space (THEORY §2) and, for PAL
    # with λ_b = 0, a common shift of the bias: compare what these leave, W Wᵀ, H Hᵀ, the
    # logits H Wᵀ and the centred bias
    centred = lambda b: np.asarray(b) - np.asarray(b).mean(-1, keepdims=True)
    diff["Pb"] = float(np.max(np.abs(centred(many.b) - centred(one.b))))
    gram = lambda A, B: np.einsum("nkd,njd->nkj", np.asarray(A), np.asarray(B))
    for k, (a, b) in {"WWt": ("W", "W"), "HHt": ("H", "H"), "HWt": ("H", "W")}.items():
        diff[k] = float(np.max(np.abs(gram(getattr(many, a), getattr(many, b))
                                      - gram(getattr(one, a), getattr(one, b)))))
    print(json.dumps({"devices": len(jax.devices()), "diff": diff,
                      "converged": bool(np.all(many.converged)) and bool(np.all(one.converged))}))
""")


def _on_four_host_devices(script: str, timeout: int) -> dict:
    """Run `script` in a fresh process with four CPU devices; its last stdout line as JSON."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sharded_over_four_devices_equals_single_device(tmp_path):
    res = _on_four_host_devices(_SHARDED, 300)
    assert res["devices"] == 4 and res["converged"]
    # the same iteration runs on every shard (only the per-device batch shape differs):
    # results agree to round-off. W and H themselves are not compared: the Schur
    # complement's null space is the rotation symmetry, and a tight CG forcing term
    # (`cg.forcing_term`) amplifies round-off there by 1/μ, which moves W, H along the
    # rotation orbit (measured 2e-9; the bias's common shift likewise) and leaves every
    # invariant to 1e-13
    assert res["diff"]["steps"] == 0
    for k, v in res["diff"].items():
        assert v <= 1e-12, (k, v)


_ROWS = textwrap.dedent("""
    import json
    import jax, numpy as np
    import mlnc_jax as mj
    d = mj.load_real("emotions")
    out = {"devices": len(jax.devices())}
    for key, loss, method in (("pal", "pal", "auto"), ("bce_matrix_free", "bce", "matrix_free")):
        cfg = mj.UFMConfig(loss, 6, 5e-3, 5e-3)
        many = mj.solve(d, cfg, devices=jax.devices(), method=method)
        one = mj.solve(d, cfg, devices=jax.devices()[:1], method=method)
        out[key] = {"status": [str(many.status), str(one.status)],
                     "diff": {k: float(np.max(np.abs(np.asarray(getattr(many, k))
                                                     - np.asarray(getattr(one, k)))))
                              for k in ("W", "H", "b", "objective", "certificate")}}
    print(json.dumps(out))
""")


def test_one_problem_sharded_over_rows_equals_single_device():
    """One problem, four host devices, on both engine paths: equal to one device. (On
    accelerators its label-set axis is sharded; on CPU devices it runs on the first one,
    see `placement._rows_placer`.)"""
    res = _on_four_host_devices(_ROWS, 600)
    assert res["devices"] == 4
    for loss in ("pal", "bce_matrix_free"):
        assert res[loss]["status"] == ["certified", "certified"], res
        # the same Newton iteration, with reductions summed in another order: round-off only
        for k, v in res[loss]["diff"].items():
            assert v <= 1e-8, (loss, k, v)


_ISSUE_SIZE = textwrap.dedent("""
    import json, warnings
    import jax, numpy as np
    import mlnc_jax as mj
    d = mj.random_correlated(20, 3, max_multiplicity=3)
    cfg = mj.UFMConfig("pal", 20, 5e-3, 5e-3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        many = mj.solve(d, cfg, tol=1e-10, progress=False)
    one = mj.solve(d, cfg, tol=1e-10, devices=jax.devices()[:1], progress=False)
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
    gram = lambda X: np.asarray(X) @ np.asarray(X).T
    print(json.dumps({"devices": len(jax.devices()), "T": d.num_sets,
                      "status": [str(many.status), str(one.status)],
                      "warned": any("CPU collectives" in str(w.message) for w in caught),
                      "gram_W": rel(gram(many.W), gram(one.W)),
                      "gram_H": rel(gram(many.H), gram(one.H))}))
""")


@pytest.mark.parametrize("n", [2, 4])
def test_one_large_problem_on_several_cpu_devices_finishes(n):
    """K = 20, T = 1,350 on n host devices: once a deadlock of XLA's CPU collectives in
    the Newton loops; now it runs on one device with a warning, and never hangs."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    out = subprocess.run([sys.executable, "-c", _ISSUE_SIZE], env=env, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["devices"] == n and res["T"] > 1000 and res["warned"]
    assert res["status"] == ["certified", "certified"]
    assert res["gram_W"] <= 1e-8 and res["gram_H"] <= 1e-8, res


_FORCED = textwrap.dedent("""
    import jax, mlnc_jax as mj
    jax.config.update("jax_enable_x64", True)
    d = mj.random_correlated(20, 3, max_multiplicity=3)
    try:
        r = mj.solve(d, mj.UFMConfig("pal", 20, 5e-3, 5e-3), tol=1e-10, progress=False)
        print("finished", r.status)
    except mj.CollectiveTimeoutError as e:
        print("timeout", e)
""")


def test_a_collective_that_never_completes_fails_with_one_line_instead_of_hanging(tmp_path):
    """Row sharding forced onto CPU devices (where XLA's collectives deadlock at this size):
    the watchdog bound ends the solve with `CollectiveTimeoutError` and a clean exit, from
    the Python API and from the CLI; a run that happens not to deadlock must finish."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", MLNC_CPU_ROW_SHARDING="1",
               MLNC_COLLECTIVE_TIMEOUT="10",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess.run([sys.executable, "-c", _FORCED], env=env, capture_output=True,
                         text=True, timeout=180)
    last = out.stdout.strip().splitlines()[-1]
    if last.startswith("timeout"):
        assert out.returncode == 1 and "MLNC_COLLECTIVE_TIMEOUT" in last, out.stderr[-2000:]
    else:
        assert out.returncode == 0 and last == "finished certified", out.stderr[-2000:]
    d = mj.random_correlated(20, 3, max_multiplicity=3)
    d.save(tmp_path / "d.json")
    cli = subprocess.run([sys.executable, "-m", "mlnc_jax.app.cli", "solve", "--labels", "d.json",
                          "--loss", "pal", "--dim", "20", "--lambda-w", "5e-3", "--lambda-h",
                          "5e-3", "--tol", "1e-10", "--no-progress", "--out", "r.npz"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    if cli.returncode != 0:
        lines = cli.stderr.strip().splitlines()
        assert cli.returncode == 1 and len(lines) == 1, cli.stderr[-2000:]
        assert lines[0].startswith("mlnc-jax: error:") and "MLNC_COLLECTIVE_TIMEOUT" in lines[0]
        assert not (tmp_path / "r.npz").exists()
