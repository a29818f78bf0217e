"""The command line never replaces an input and refuses bad counts before computing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DIST = {"num_classes": 4, "label_sets": [[0], [1], [2], [3], [0, 1]], "weights": [3, 2, 1, 1, 2]}
PROBLEM = ["--loss", "pal", "--dim", "4", "--lambda-w", "5e-3", "--lambda-h", "5e-3"]


def _cli(args, cwd):
    env = dict(os.environ, JAX_PLATFORMS="cpu", MLNC_CACHE_DIR="off")
    return subprocess.run([sys.executable, "-m", "mlnc_jax.app.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps(DIST))
    return tmp_path


def _refused(out, *names):
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("mlnc-jax: error: ")
    for n in names:
        assert n in lines[0]
    return lines[0]


@pytest.mark.parametrize("labels,out", [("d.json", "d.npz"), ("link.json", "d.npz")])
def test_out_sidecar_may_not_replace_the_labels(folder, labels, out):
    (folder / "link.json").symlink_to(folder / "d.json")
    before = (folder / "d.json").read_bytes()
    _refused(_cli(["solve", "--labels", labels, *PROBLEM, "--out", out], folder), labels)
    assert (folder / "d.json").read_bytes() == before
    assert not (folder / "d.npz").exists()


def test_out_may_not_replace_a_label_matrix(folder):
    import numpy as np

    np.savez(folder / "y.npz", labels=np.eye(4, dtype=np.uint8))
    before = (folder / "y.npz").read_bytes()
    _refused(_cli(["solve", "--labels", "y.npz", *PROBLEM, "--out", "y.npz"], folder), "y.npz")
    assert (folder / "y.npz").read_bytes() == before


def test_sidecar_that_is_a_directory_is_refused_before_computing(folder):
    (folder / "o.json").mkdir()
    _refused(_cli(["solve", "--labels", "d.json", *PROBLEM, "--out", "o.npz"], folder), "o.json")
    assert not (folder / "o.npz").exists()


@pytest.mark.parametrize("flag,value", [("--max-steps", "2147483648"),
                                        ("--max-steps", "10000000000000000000"),
                                        ("--cert-tol", "1e-300"), ("--tol", "inf"),
                                        ("--seed", "-1")])
def test_out_of_range_arguments_are_one_line(folder, flag, value):
    _refused(_cli(["solve", "--labels", "d.json", *PROBLEM, "--out", "r.npz", flag, value],
                  folder), flag)
    assert not (folder / "r.npz").exists()


def test_sweep_out_may_not_hold_its_config_under_a_name_it_writes(folder):
    cfg = {"distributions": ["d.json"], "losses": ["pal"], "dim": 4, "lambda_w": [5e-3],
           "lambda_h": [5e-3]}
    sweep = folder / "s"
    sweep.mkdir()
    (sweep / "manifest.json").write_text(json.dumps({**cfg, "distributions": ["../d.json"]}))
    before = (sweep / "manifest.json").read_bytes()
    _refused(_cli(["sweep", "--config", "s/manifest.json", "--out", "s"], folder), "manifest.json")
    assert (sweep / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in sweep.iterdir()) == ["manifest.json"]
    (folder / "cfg.json").write_text(json.dumps(cfg))
    _refused(_cli(["sweep", "--config", "cfg.json", "--out", "cfg.json"], folder), "cfg.json")
    assert Path(folder / "cfg.json").read_text() == json.dumps(cfg)


def test_compile_cache_is_written_and_reused(folder):
    """A second identical command loads its programs from the per-user cache folder."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", MLNC_CACHE_DIR=str(folder / "cache"))
    run = lambda: subprocess.run([sys.executable, "-m", "mlnc_jax.app.cli", "solve", "--labels",
                                  "d.json", *PROBLEM, "--out", "r.npz", "--no-progress"],
                                 cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    first = run()
    assert first.returncode == 0, first.stderr
    entries = sorted(p.name for p in (folder / "cache").iterdir())
    assert entries, "nothing was cached"
    second = run()
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in (folder / "cache").iterdir()) == entries  # all hits
    off = _cli(["solve", "--labels", "d.json", *PROBLEM, "--out", "r2.npz", "--compile-cache",
                "off", "--no-progress"], folder)
    assert off.returncode == 0, off.stderr
