"""Hostile input through the command line: every case ends with exit 2 and one line on stderr,
no traceback and no file written; finished compute survives a failing write."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlnc_jax.app.cli import main

A = ["--loss", "mse", "--dim", "3", "--lambda-w", "1e-3", "--lambda-h", "1e-3"]
DIST = {"num_classes": 4, "label_sets": [[0], [1], [2], [3], [0, 1], [2, 3], [1, 2]],
        "weights": [40, 30, 10, 5, 10, 5, 3]}


def _write(tmp_path, obj, name="dist.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


def _refused(capsys, argv, word, tmp_path=None, keep=()):
    """Exit 2, one line naming the problem, nothing new in `tmp_path`."""
    before = set(os.listdir(tmp_path)) if tmp_path else set()
    code = main(argv)
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert code == 2, (argv, cap.out, err)
    assert len(err.splitlines()) == 1 and err.startswith("mlnc-jax") and "error:" in err, err
    assert "Traceback" not in cap.err
    assert word in err, err
    if tmp_path:
        assert set(os.listdir(tmp_path)) == before, "a file was written"
    return err


@pytest.mark.parametrize("weights", [[1e308] * 7])
@pytest.mark.parametrize("command", ["solve", "closed-form", "spectrum"])
def test_huge_weights_are_normalised_not_overflowed(tmp_path, capsys, weights, command):
    labels = _write(tmp_path, {**DIST, "weights": weights})
    out = tmp_path / "r.npz"
    # d = 3 is below the rank (4) of this distribution's solution: accept it uncertified
    argv = {"solve": ["solve", "--labels", labels, *A, "--allow-uncertified", "--out", str(out)],
            "closed-form": ["closed-form", "--labels", labels, *A[:2], *A[4:], "--out", str(out)],
            "spectrum": ["spectrum", "--labels", labels, "--json"]}[command]
    assert main(argv) == 0
    cap = capsys.readouterr()
    assert "overflow" not in cap.err.lower()
    if command == "spectrum":
        assert json.loads(cap.out)["class_frequencies"] == pytest.approx([2 / 7, 3 / 7, 3 / 7, 2 / 7])
    else:
        np.testing.assert_allclose(np.load(out)["weights"], np.full(7, 1 / 7), rtol=1e-15)


@pytest.mark.parametrize("patch,word", [
    ({"weights": ["40", "30", "10", "5", "10", "5", "3"]}, "must be a number"),
    ({"weights": [True, False, True, True, True, True, True]}, "must be a number"),
    ({"weights": [[40], [30], [10], [5], [10], [5], [3]]}, "must be a number"),
    ({"num_classes": 13, "label_sets": ["12", [0], [2], [3], [0, 1], [2, 3], [1, 2]]}, "label set #0"),
    ({"label_sets": [{"0": 1}, [1], [2], [3], [0, 1], [2, 3], [1, 2]]}, "label set #0"),
    ({"num_classes": "4"}, "num_classes must be an integer"),
])
def test_distribution_types(tmp_path, capsys, patch, word):
    labels = _write(tmp_path, {**DIST, **patch})
    _refused(capsys, ["solve", "--labels", labels, *A, "--out", str(tmp_path / "r.npz")], word, tmp_path)


def test_bad_options_refused_before_compute(tmp_path, capsys):
    labels = _write(tmp_path, DIST)
    out = ["--out", str(tmp_path / "r.npz")]
    base = ["solve", "--labels", labels]
    _refused(capsys, base + A + ["--seed", "1180591620717411303424"] + out, "--seed", tmp_path)
    _refused(capsys, base + A + ["--seed", "-1"] + out, "--seed", tmp_path)
    _refused(capsys, base + A + ["--tol", "inf"] + out, "--tol", tmp_path)
    _refused(capsys, base + A + ["--tol", "nan"] + out, "--tol", tmp_path)
    _refused(capsys, base + A + ["--cert-tol", "0"] + out, "--cert-tol", tmp_path)
    tiny = ["--loss", "mse", "--dim", "3", "--lambda-w", "1e-320", "--lambda-h", "1e-320"]
    _refused(capsys, base + tiny + out, "not a normal positive float64", tmp_path)
    _refused(capsys, ["closed-form", "--labels", labels, *tiny[:2], *tiny[4:]] + out,
             "not a normal positive float64", tmp_path)
    err = _refused(capsys, base + ["--loss", "mse", "--dim", "1000000000", "--lambda-w", "1e-3",
                                   "--lambda-h", "1e-3"] + out, "memory", tmp_path)
    assert re.search(r"about \d+(\.\d+)? [GTP]iB", err), err


def test_degenerate_distributions(tmp_path, capsys):
    empty = _write(tmp_path, {"num_classes": 3, "label_sets": [[]], "weights": [1]}, "empty.json")
    np.save(tmp_path / "zero.npy", np.zeros((5, 3), dtype=np.uint8))
    k1 = _write(tmp_path, {"num_classes": 1, "label_sets": [[], [0]], "weights": [1, 1]}, "k1.json")
    big = _write(tmp_path, {"num_classes": 10**7, "label_sets": [[0], [1]], "weights": [1, 1]}, "big.json")
    out = str(tmp_path / "r.npz")
    for src in (empty, str(tmp_path / "zero.npy")):
        _refused(capsys, ["spectrum", "--labels", src], "only the empty label set", tmp_path)
        _refused(capsys, ["closed-form", "--labels", src, "--loss", "pal", "--lambda-w", "1e-3",
                          "--lambda-h", "1e-3", "--out", out], "only the empty label set", tmp_path)
    _refused(capsys, ["compare", "--labels", k1, "--figure", str(tmp_path / "f.png")],
             "at least K = 2", tmp_path)
    err = _refused(capsys, ["spectrum", "--labels", big], "memory", tmp_path)
    assert "iB" in err


def test_unwritable_out_is_refused_before_compute(capsys):
    # /proc accepts no new files, not even from root: the probe write fails before computing
    _refused(capsys, ["solve", "--labels", "scene", *A, "--out", "/proc/mlnc-result.npz"],
             "cannot write to /proc")
    assert not Path("/proc/mlnc-result.npz").exists()


def test_write_failure_after_compute_keeps_the_result(tmp_path, capsys, monkeypatch):
    from mlnc_jax.io import results as results_io

    real = results_io.write_npz_atomic
    out = tmp_path / "cf.npz"

    def disk_full(path, *a, **k):
        if Path(path) == out:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *a, **k)

    monkeypatch.setattr(results_io, "write_npz_atomic", disk_full)
    labels = _write(tmp_path, DIST)
    code = main(["closed-form", "--labels", labels, "--loss", "mse", "--lambda-w", "1e-3",
                 "--lambda-h", "1e-3", "--out", str(out)])
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "No space left" in err
    fallback = Path(err.split("results saved to ")[1])
    assert fallback.name == "cf.npz" and str(fallback) in cap.out  # results line printed
    assert not out.exists()
    with np.load(fallback) as f:
        assert f["gram_W"].shape == (4, 4)
    shutil.rmtree(fallback.parent)


@pytest.mark.skipif(shutil.which("mlnc-jax") is None and not (Path(sys.executable).parent / "mlnc-jax").exists(),
                    reason="console script not installed")
def test_console_script_one_line(tmp_path):
    exe = shutil.which("mlnc-jax") or str(Path(sys.executable).parent / "mlnc-jax")
    labels = _write(tmp_path, DIST)
    p = subprocess.run([exe, "solve", "--labels", labels, *A, "--seed", "1180591620717411303424",
                        "--out", str(tmp_path / "x.npz")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "--seed" in p.stderr
    assert sorted(os.listdir(tmp_path)) == ["dist.json"]
