"""Resumable sweeps: grid expansion, chunk files, resume, corruption, interruption, bad configs."""

import json

import numpy as np
import pytest

from mlnc_jax.app import sweep as sw
from mlnc_jax.app.cli import main
from mlnc_jax.model.errors import InputError

CFG = {"distributions": [{"generator": "random_correlated", "num_classes": 3, "seed": {"range": [0, 5]}},
                         {"generator": "balanced", "num_classes": 4, "multiplicity_mass": {"1": 1}}],
       "losses": ["mse", "pal"], "dim": 4, "lambda_w": [0.01, 0.02], "lambda_h": 0.01,
       "seeds": [0, 1], "chunk_size": 4}


def _fake_solver(calls):
    def solve_chunk(dists, config, seeds, tol):
        calls.append(len(dists))
        B, T, K = len(dists), max(d.num_sets for d in dists), dists[0].num_classes
        return {"W": np.ones((B, K, config.dim)), "H": np.zeros((B, T, config.dim)), "b": np.zeros((B, K)),
                "objective": np.arange(B, dtype=float), "grad_norm": np.zeros(B),
                "certificate": np.ones(B), "converged": np.ones(B, bool),
                "certified": np.ones(B, bool), "steps": np.ones(B, int),
                "mask": np.ones((B, T), bool)}
    return solve_chunk


def test_expand_grid_and_chunks():
    m = sw.expand_sweep(CFG)
    assert len(m["problems"]) == 2 * 2 * 2 * 6  # losses × λ_W × seeds × distributions
    seen = sorted(i for c in m["chunks"] for i in c)
    assert seen == list(range(len(m["problems"])))
    for c in m["chunks"]:
        assert 1 <= len(c) <= 4
        keys = {(m["problems"][i]["loss"], m["problems"][i]["lambda_w"], m["problems"][i]["num_classes"]) for i in c}
        assert len(keys) == 1  # one loss, one λ, one K per chunk


def test_resume_skips_finished_and_redoes_broken(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sw, "_solve_chunk", _fake_solver(calls))
    s = sw.run_sweep(CFG, tmp_path, progress=False)
    n = s["chunks"]
    assert s["computed"] == n and len(calls) == n
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("chunk-*")}
    s = sw.run_sweep(CFG, tmp_path, progress=False)
    assert s["computed"] == 0 and s["skipped"] == n and len(calls) == n
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("chunk-*")}
    (tmp_path / "chunk-00001.json").unlink()                       # never marked complete
    (tmp_path / "chunk-00002.npz").write_bytes(b"truncated")       # corrupt
    npz3 = tmp_path / "chunk-00003.npz"
    npz3.write_bytes(npz3.read_bytes()[:-10])                      # partial
    s = sw.run_sweep(CFG, tmp_path, progress=False)
    assert s["computed"] == 3 and len(calls) == n + 3
    res = sw.load_sweep(tmp_path)
    assert res["missing_chunks"] == [] and sorted(res["problem"]) == list(range(len(res["manifest"]["problems"])))


def test_interrupt_loses_only_the_running_chunk(tmp_path, monkeypatch):
    calls = []
    inner = _fake_solver(calls)

    def flaky(*a):
        if len(calls) == 2:
            raise KeyboardInterrupt
        return inner(*a)

    monkeypatch.setattr(sw, "_solve_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        sw.run_sweep(CFG, tmp_path, progress=False)
    assert len(list(tmp_path.glob("chunk-*.json"))) == 2
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]  # nothing half-written
    monkeypatch.setattr(sw, "_solve_chunk", inner)
    s = sw.run_sweep(CFG, tmp_path, progress=False)
    assert s["skipped"] == 2 and s["computed"] == s["chunks"] - 2


def test_real_sweep_matches_solve(tmp_path):
    from mlnc_jax import UFMConfig, random_correlated, solve

    cfg = {"distributions": [{"generator": "random_correlated", "num_classes": 3, "seed": [0, 1]}],
           "losses": ["mse"], "dim": 3, "lambda_w": 0.01, "lambda_h": 0.01, "seeds": [0], "chunk_size": 8}
    (tmp_path / "s.json").write_text(json.dumps(cfg))
    assert main(["sweep", "--config", str(tmp_path / "s.json"), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    res = sw.load_sweep(tmp_path / "o")
    for j, seed in enumerate([0, 1]):
        r = solve(random_correlated(3, seed), UFMConfig("mse", 3, 0.01, 0.01))
        assert abs(res["objective"][j] - float(r.objective)) <= 1e-10
        assert abs(res["certificate"][j] - 1) <= 1e-6
    meta = json.loads((tmp_path / "o" / "chunk-00000.json").read_text())
    for key in ("config", "seeds", "mlnc_jax_version", "jax_version", "device", "dtype", "wall_time_s", "sha256"):
        assert key in meta


def test_malformed_sweep_and_foreign_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.json").write_text("{")
    assert main(["sweep", "--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o")]) == 2
    assert "malformed JSON" in capsys.readouterr().err
    monkeypatch.setattr(sw, "_solve_chunk", _fake_solver([]))
    sw.run_sweep(CFG, tmp_path / "o2", progress=False)
    with pytest.raises(InputError, match="different sweep"):
        sw.run_sweep({**CFG, "dim": 5}, tmp_path / "o2", progress=False)
