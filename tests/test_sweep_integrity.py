"""Sweeps you can trust: edited, swapped and foreign chunks are recomputed, a second run on
the same directory is locked out, stray temporaries are removed, results come back in
manifest order, and a bad config writes nothing."""

import json
import os
import shutil

import numpy as np
import pytest

from mlnc_jax.app import sweep as sw
from mlnc_jax.app.cli import main
from mlnc_jax.app.sweep_cli import format_repairs
from mlnc_jax.model.errors import InputError

CFG = {"distributions": [{"generator": "random_correlated", "num_classes": 3, "seed": {"range": [0, 5]}},
                         {"generator": "balanced", "num_classes": 4, "multiplicity_mass": {"1": 1}}],
       "losses": ["mse", "pal"], "dim": 4, "lambda_w": [0.01, 0.02], "lambda_h": 0.01,
       "seeds": [0, 1], "chunk_size": 4}


def _fake_solve_chunk(dists, config, seeds, tol):
    """Deterministic stand-in: objective encodes (λ_W, seed, K), so a chunk computed for the
    wrong problems is visible in the results."""
    B, T, K = len(dists), max(d.num_sets for d in dists), dists[0].num_classes
    obj = np.array([config.lambda_w * 1000 + 10 * s + K for s in seeds], dtype=float)
    return {"W": np.ones((B, K, config.dim)), "H": np.zeros((B, T, config.dim)), "b": np.zeros((B, K)),
            "objective": obj, "grad_norm": np.zeros(B), "certificate": np.ones(B),
            "converged": np.ones(B, bool), "certified": np.ones(B, bool),
            "steps": np.ones(B, int), "mask": np.ones((B, T), bool)}


@pytest.fixture
def fake(monkeypatch):
    calls = []

    def solve_chunk(*a):
        calls.append(len(a[0]))
        return _fake_solve_chunk(*a)

    monkeypatch.setattr(sw, "_solve_chunk", solve_chunk)
    return calls


def _expected_objective(manifest):
    return np.array([p["lambda_w"] * 1000 + 10 * p["seed"] + p["num_classes"] for p in manifest["problems"]])


def test_load_sweep_returns_manifest_order(tmp_path, fake):
    sw.run_sweep(CFG, tmp_path, progress=False)
    res = sw.load_sweep(tmp_path)
    m = res["manifest"]
    # chunks group problems by (loss, λ, K), so chunk order is not problem order
    assert [i for c in m["chunks"] for i in c] != list(range(len(m["problems"])))
    np.testing.assert_array_equal(res["problem"], np.arange(len(m["problems"])))
    np.testing.assert_array_equal(res["objective"], _expected_objective(m))
    assert [w.shape[0] for w in res["W"]] == [p["num_classes"] for p in m["problems"]]


def test_edited_swapped_and_foreign_chunks_are_recomputed(tmp_path, fake, capsys):
    out = tmp_path / "o"
    (tmp_path / "s.json").write_text(json.dumps(CFG))
    argv = ["sweep", "--config", str(tmp_path / "s.json"), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    n = len(fake)
    # edited sidecar: the config and the seeds changed, npz untouched
    js = out / "chunk-00001.json"
    meta = json.loads(js.read_text())
    meta["seeds"] = [9] * len(meta["seeds"])
    meta["config"]["lambda_w"] = 0.5
    js.write_text(json.dumps(meta))
    # chunk 10 copied over chunk 9 (both files)
    for ext in (".npz", ".json"):
        shutil.copy(out / f"chunk-00010{ext}", out / f"chunk-00009{ext}")
    # a chunk of another sweep (different lambda_h) at the same index
    other = tmp_path / "other"
    sw.run_sweep({**CFG, "lambda_h": 0.03}, other, progress=False)
    for ext in (".npz", ".json"):
        shutil.copy(other / f"chunk-00003{ext}", out / f"chunk-00003{ext}")
    # a sidecar that is valid JSON but not an object
    (out / "chunk-00004.json").write_text("[1, 2]")
    # an edited sidecar whose checksums were recomputed: the config digest still differs
    m = json.loads((out / "manifest.json").read_text())
    meta = json.loads((out / "chunk-00005.json").read_text())
    meta["config_digest"] = "0" * 64
    data = (out / "chunk-00005.npz").read_bytes()
    meta["checksum"] = sw._sidecar_checksum({k: v for k, v in meta.items() if k != "checksum"}, data)
    (out / "chunk-00005.json").write_text(json.dumps(meta))
    n_other = len(fake)
    capsys.readouterr()
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert len(fake) - n_other == 5
    assert "recomputed 5 chunk(s)" in text
    for why in ("checksum mismatch", "holds chunk 10", "from another sweep",
                "sidecar is not a JSON object", "configuration differs"):
        assert why in text, text
    res = sw.load_sweep(out)
    assert res["missing_chunks"] == [] and n == len(m["chunks"])
    np.testing.assert_array_equal(res["problem"], np.arange(len(m["problems"])))
    np.testing.assert_array_equal(res["objective"], _expected_objective(m))
    # a swapped chunk that is not recomputed (no rerun) is not handed out by load_sweep
    for ext in (".npz", ".json"):
        shutil.copy(out / f"chunk-00010{ext}", out / f"chunk-00009{ext}")
    assert sw.load_sweep(out)["missing_chunks"] == [9]


def test_second_concurrent_sweep_is_locked_out(tmp_path, fake, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (tmp_path / "s.json").write_text(json.dumps(CFG))
    with sw._Lock(out):  # flock is per open file: a second open in this process conflicts
        code = main(["sweep", "--config", str(tmp_path / "s.json"), "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert f"another sweep (PID {os.getpid()})" in err
        assert not list(out.glob("chunk-*")) and not (out / "manifest.json").exists()
    # released: a stale lock file (its holder gone) is taken over
    assert (out / ".sweep.lock").exists()
    assert main(["sweep", "--config", str(tmp_path / "s.json"), "--out", str(out), "--no-progress"]) == 0


def test_stray_temporaries_are_removed(tmp_path, fake, capsys):
    sw.run_sweep(CFG, tmp_path, progress=False)
    for name in (".chunk-00002.npz.tmp12345", ".tmp-abcd.json", ".chunk-00007.npz.tmp9"):
        (tmp_path / name).write_bytes(b"x")
    s = sw.run_sweep(CFG, tmp_path, progress=False)
    assert s["stray_files_removed"] == 3 and s["computed"] == 0
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]
    assert "removed 3 stray temporary file(s)" in format_repairs(s)


@pytest.mark.parametrize("patch,word", [
    ({"colour": 1}, "unknown sweep key"),
    ({"losses": ["hinge"]}, "unknown loss"),
    ({"dim": 0}, "dim"),
    ({"lambda_w": [-1]}, "lambda_w"),
    ({"distributions": []}, "distributions"),
    ({"seeds": [-1]}, "seeds"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"distributions": [{"generator": "nope"}]}, "unknown generator"),
    ({"distributions": ["missing.json"]}, "no such file"),
    ({"tol": float("inf")}, "tol"),
    ({"tol": "1e-10"}, "tol"),
    ({"seeds": [2**63]}, "seeds"),
    ({"seeds": [True]}, "seeds"),
    ({"dim": "4"}, "dim"),
    ({"lambda_w": 1e-320, "lambda_h": 1e-320}, "normal positive"),
    ({"lambda_w": ["0.01"]}, "lambda_w"),
    ({"distributions": [{"generator": "random_correlated", "num_classes": "x", "seed": 0}]}, "num_classes"),
    ({"distributions": [{"generator": "random_correlated", "num_classes": 3}]}, "needs seed"),
    ({"distributions": [{"generator": "balanced", "num_classes": 3, "multiplicity_mass": {"x": 1}}]},
     "multiplicity_mass"),
    ({"distributions": [{"generator": "balanced", "num_classes": 3, "multiplicity_mass": [1]}]},
     "multiplicity_mass"),
    ({"distributions": [{"generator": "balanced", "num_classes": 60, "multiplicity_mass": {"30": 1}}]},
     "label sets"),
    ({"distributions": [{"generator": "random_correlated", "num_classes": 3, "seed": 0, "colour": 1}]},
     "unknown key"),
    ({"distributions": [{"num_classes": 3, "label_sets": ["12"], "weights": [1]}]}, "label set #0"),
    ({"seeds": {"range": [0, 10**12]}}, "range"),
    ({"dim": 10**9}, "memory"),
])
def test_bad_configs_write_nothing(tmp_path, capsys, patch, word):
    (tmp_path / "s.json").write_text(json.dumps({**CFG, **patch}))
    out = tmp_path / "o"
    assert main(["sweep", "--config", str(tmp_path / "s.json"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and word in err, err
    assert not out.exists()


def test_infinity_tol_in_json_writes_no_manifest(tmp_path, capsys):
    (tmp_path / "s.json").write_text(json.dumps(CFG)[:-1] + ', "tol": Infinity}')
    out = tmp_path / "o"
    out.mkdir()
    assert main(["sweep", "--config", str(tmp_path / "s.json"), "--out", str(out)]) == 2
    assert "tol" in capsys.readouterr().err and list(out.iterdir()) == []


def test_out_is_a_file_or_foreign_manifest(tmp_path, fake, capsys):
    (tmp_path / "s.json").write_text(json.dumps(CFG))
    f = tmp_path / "file"
    f.write_text("keep me")
    assert main(["sweep", "--config", str(tmp_path / "s.json"), "--out", str(f)]) == 2
    assert "not a directory" in capsys.readouterr().err and f.read_text() == "keep me"
    d = tmp_path / "d"
    d.mkdir()
    for text in ("[1, 2, 3]", '"manifest"', "{}", "{", '{"sweep_hash": "abc"}'):
        (d / "manifest.json").write_text(text)
        assert main(["sweep", "--config", str(tmp_path / "s.json"), "--out", str(d)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "not a sweep manifest" in err
        assert (d / "manifest.json").read_text() == text and not list(d.glob("chunk-*"))
    with pytest.raises(InputError, match="not a sweep manifest"):
        sw.load_sweep(d)
