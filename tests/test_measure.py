"""`mlnc_jax.measure` / `mlnc-jax measure`: a network's last layer from files against the
certified UFM optimum (THEORY §2, §7, §8)."""

import json
from functools import cache

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

import mlnc_jax as mj
from mlnc_jax import networks as nw
from mlnc_jax.app.cli import main
from mlnc_jax.networks.statistics import distribution_and_index

jax.config.update("jax_enable_x64", True)

# (data set, loss, λ_W, λ_H): trained with λ_θ = 0 on the shipped MULAN features
CASES = {"emotions": ("bce", 1e-2, 3e-3), "scene": ("pal", 5e-3, 5e-3), "yeast": ("mse", 5e-3, 2e-2)}


@cache
def _trained(ds):
    loss, lw, lh = CASES[ds]
    X, Y, _ = nw.load_features(ds)
    idx = nw.subsample(Y, 200, 0)
    X, Y = X[idx], Y[idx]
    tc = nw.TrainConfig(loss, lw, lh, 0.0, adam_steps=200, lbfgs_steps=400)
    run = nw.train(X, Y, nw.MLPConfig(width=64, depth=2, dim=16), tc, seed=0)
    H = np.asarray(nw.features(run.params.layers, nw.standardize(X)))
    return H, Y, np.asarray(run.params.W), np.asarray(run.params.b)


def _export(tmp_path, fmt, H, Y, W, b):
    """The arrays as a PyTorch user would save them: `--features` etc. specs."""
    if fmt == "npy":
        for k, a in {"H": H, "Y": Y, "W": W, "b": b}.items():
            np.save(tmp_path / f"{k}.npy", a)
        return [str(tmp_path / f"{k}.npy") for k in "HYWb"]
    if fmt == "npz":
        np.savez(tmp_path / "net.npz", feats=H, labels=Y, W=W, bias=b)
        f = str(tmp_path / "net.npz")
        return [f + ":feats", f, f, f]                    # a named key, then the defaults
    save_file({"features": H, "labels": Y.astype(np.uint8), "W": W, "b": b},
              str(tmp_path / "net.safetensors"))
    return [str(tmp_path / "net.safetensors")] * 4


def _cli(tmp_path, specs, loss, *extra):
    out = tmp_path / "report.json"
    argv = ["measure", "--features", specs[0], "--labels", specs[1], "--classifier", specs[2],
            "--bias", specs[3], "--loss", loss, "--out", str(out), "--compile-cache", "off", *extra]
    return main(argv), out


def _tolerance(name, H, idx):
    """1e-10, except NC1 = tr(Σ_W Σ_B^†)/T': a change `δμ` of the means (round-off of block
    sums, `~√N ε` relative) moves it by up to `cond(Σ_B)` times as much (its pseudo-inverse
    spans eigenvalues from λ_max down to the pinv cut)."""
    if name != "nc1":
        return 1e-10
    mu = np.stack([H[idx == s].mean(0) for s in range(idx.max() + 1)])
    w = np.linalg.eigvalsh(np.cov((mu - H.mean(0)).T, bias=True))
    w = w[w > 10 * H.shape[1] * np.finfo(float).eps * w.max()]
    return max(1e-10, 10 * np.sqrt(len(H)) * np.finfo(float).eps * w.max() / w.min())


@pytest.mark.parametrize("ds,fmt", [("emotions", "npy"), ("scene", "npz"), ("yeast", "safetensors")])
def test_cli_reproduces_compare_network(tmp_path, ds, fmt):
    """Files → CLI (streamed in 7-row blocks) gives `compare_network`'s numbers to 1e-10."""
    loss, lw, lh = CASES[ds]
    H, Y, W, b = _trained(ds)
    rc, out = _cli(tmp_path, _export(tmp_path, fmt, H, Y, W, b), loss, "--lambda-w", str(lw),
                   "--lambda-h", str(lh), "--chunk-rows", "7")
    assert rc == 0
    rep = json.loads(out.read_text())
    dist, idx = distribution_and_index(Y)
    config = mj.UFMConfig(loss, min(H.shape[1], Y.shape[1]), lw, lh)
    ufm = mj.solve(dist, config, seed=0, tol=1e-10)
    ref = nw.compare_network(H, W, b, nw.sample_set_index(Y, dist), dist, ufm, config)
    assert np.array_equal(idx, nw.sample_set_index(Y, dist))
    assert rep["ufm"]["certified"] and rep["fit"] is None
    for name, v in ref._asdict().items():
        assert rep["comparison"][name] == pytest.approx(v, rel=_tolerance(name, H, idx), abs=1e-14), name
    for key in ("samples", "spread", "gram_row_error", "logit_error", "norm_ratio"):
        assert len(rep["per_set"][key]) == dist.num_sets
    assert rep["worst_sets"][0]["gram_row_error"] == max(rep["per_set"]["gram_row_error"])
    meta = rep["metadata"]
    assert meta["command"] == "measure" and meta["dtype"] == "float64" and meta["wall_time_s"] > 0


def test_fit_recovers_the_training_lambdas(tmp_path):
    """Trained at known λ's with λ_θ = 0, the fit finds them. Tolerance from first order:
    the fit moves `log λ` by at most `‖r(θ_true)‖ / σ_min(J)` (the network's own distance from
    its UFM over the fit's sensitivity); twice that for the second-order terms."""
    loss, lw, lh = CASES["emotions"]
    H, Y, W, b = _trained("emotions")
    rc, out = _cli(tmp_path, _export(tmp_path, "npy", H, Y, W, b), loss)
    rep = json.loads(out.read_text())
    fit = rep["fit"]
    assert rc == 0 and fit["converged"]
    at_true = mj.measure(H, Y, W, b, loss=loss, lambda_w=lw, lambda_h=lh).comparison
    r_true = np.hypot(at_true.gram_w_error, at_true.gram_h_error_weighted)
    sigma = np.sqrt(np.linalg.eigvalsh(np.asarray(fit["curvature"])).min())
    err = np.abs(np.log([fit["lambda_w"] / lw, fit["lambda_h"] / lh]))
    assert np.all(err <= 2 * r_true / sigma), (err, r_true, sigma)
    assert np.all(err < 0.05)
    assert fit["distance"] <= r_true + 1e-12                  # a fit is no worse than the truth
    assert abs(fit["balance"] - 1) < 10 * r_true              # the network is near balance


def test_ufm_optimum_as_a_network_is_measured_exactly():
    """The certified optimum itself, one sample per count, is a network at its UFM: the fit
    returns its λ's to the solve's precision, every distance vanishes, balance is 1 (THEORY §8)."""
    Y, _ = mj.sample_labels(mj.random_correlated(4, 3), 300, seed=0)
    dist, idx = distribution_and_index(Y)                # the empirical distribution itself
    lw, lh = 2e-2, 4e-3
    u = mj.solve(dist, mj.UFMConfig("pal", 4, lw, lh), tol=1e-12)
    m = mj.measure(np.asarray(u.H)[idx], Y, u.W, u.b, loss="pal")
    assert m.ufm.certified and m.fit.converged
    # the optimum is solved to 1e-12 (block residuals): the λ's follow to ~1e-10
    assert m.fit.lambda_w == pytest.approx(lw, rel=1e-8)
    assert m.fit.lambda_h == pytest.approx(lh, rel=1e-8)
    assert m.comparison.gram_h_error < 1e-8 and m.comparison.gram_w_error < 1e-8
    assert m.balance == pytest.approx(1.0, abs=1e-8)
    assert m.comparison.within_ratio < 1e-24                   # round-off of h_i − μ_s only


def test_ufm_invariants_do_not_depend_on_the_dimension_above_k():
    """`measure` solves in `min(d, K)`: a certified optimum's invariants are those of every
    larger `d` (THEORY §3: the convex problem has no `d`)."""
    dist = mj.load_real("emotions")
    a = mj.solve(dist, mj.UFMConfig("bce", 6, 1e-2, 3e-3), tol=1e-12)
    c = mj.solve(dist, mj.UFMConfig("bce", 16, 1e-2, 3e-3), tol=1e-12)
    assert a.certified and c.certified
    cmp = mj.compare(a, c)
    assert max(cmp.gram_W, cmp.gram_H, cmp.logits) < 1e-8


def _refusal(tmp_path, capsys, argv):
    rc = main(["measure", "--out", str(tmp_path / "r.json"), *argv, "--compile-cache", "off"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and err.startswith("mlnc-jax: error:"), err
    assert not (tmp_path / "r.json").exists()
    return err


def test_bad_inputs_are_refused_in_one_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    H, Y, W = rng.normal(size=(20, 4)), (rng.random((20, 3)) < 0.5).astype(int), rng.normal(size=(3, 4))
    Y[:3] = np.eye(3)
    files = {"H": H, "Y": Y, "W": W, "Wbad": W[:, :3], "Y2": Y * 2, "Yshort": Y[:10],
             "Hnan": np.where(np.arange(20)[:, None] == 13, np.nan, H)}
    for k, a in files.items():
        np.save(tmp_path / f"{k}.npy", a)
    p = lambda k: str(tmp_path / f"{k}.npy")
    base = lambda h="H", y="Y", w="W": ["--features", p(h), "--labels", p(y), "--classifier", p(w),
                                         "--loss", "bce", "--lambda-w", "0.01", "--lambda-h", "0.01"]
    assert "shape [3, 4]" in _refusal(tmp_path, capsys, base(w="Wbad"))
    assert "binary" in _refusal(tmp_path, capsys, base(y="Y2"))
    assert "N = 20" in _refusal(tmp_path, capsys, base(y="Yshort"))
    assert "row 13 is not finite" in _refusal(tmp_path, capsys, base(h="Hnan"))
    assert "no such file" in _refusal(tmp_path, capsys, base(h="nope"))
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    bad = base()
    bad[1] = str(tmp_path / "bad.safetensors")
    assert "not a safetensors file" in _refusal(tmp_path, capsys, bad)
    np.savez(tmp_path / "two.npz", a=H, c=H)
    bad[1] = str(tmp_path / "two.npz")
    assert "name one as" in _refusal(tmp_path, capsys, bad)
    (tmp_path / "link.json").symlink_to(tmp_path / "H.npy")       # --out through a link
    assert "would overwrite the input --features" in _refusal(
        tmp_path, capsys, base() + ["--out", str(tmp_path / "link.json")])
    assert np.array_equal(np.load(p("H")), H)


def test_safetensors_and_npy_readers_stream_rows(tmp_path):
    """The readers against files the official `safetensors` writer and numpy made; bfloat16
    (what PyTorch often saves) widened exactly; a truncated file is refused."""
    import struct

    from mlnc_jax.io.arrays import open_array

    a = np.random.default_rng(0).normal(size=(9, 5)).astype(np.float32)
    save_file({"features": a, "b": np.arange(3.0)}, str(tmp_path / "x.safetensors"))
    src = open_array(str(tmp_path / "x.safetensors"), "features")
    assert src.shape == (9, 5) and np.array_equal(src.rows(2, 7), a[2:7])
    assert np.array_equal(open_array(f"{tmp_path}/x.safetensors:b", "bias").read(), np.arange(3.0))
    v = np.array([[1.0, -2.5], [3.0, 0.15625]], np.float32)       # exact in bfloat16
    hdr = json.dumps({"h": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}).encode()
    raw = (v.view(np.uint32) >> 16).astype("<u2").tobytes()
    (tmp_path / "bf.safetensors").write_bytes(struct.pack("<Q", len(hdr)) + hdr + raw)
    assert np.array_equal(open_array(str(tmp_path / "bf.safetensors"), "features").read(), v)
    np.save(tmp_path / "h.npy", a.astype(np.float16))
    assert np.array_equal(open_array(str(tmp_path / "h.npy"), "features").rows(3, 9),
                          a.astype(np.float16)[3:])
    (tmp_path / "t.npy").write_bytes((tmp_path / "h.npy").read_bytes()[:-7])
    with pytest.raises(mj.InputError, match="truncated"):
        open_array(str(tmp_path / "t.npy"), "features").read()
