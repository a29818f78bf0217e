"""The `mlnc-jax` command line: results agree with the closed form, bad input fails cleanly."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlnc_jax.app.cli import main

DIST = {"num_classes": 4, "label_sets": [[0], [1], [2], [3], [0, 1], [2, 3], [1, 2]],
        "weights": [40, 30, 10, 5, 10, 5, 3]}


def _write(tmp_path, obj, name="dist.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("bias", [True, False])
def test_solve_mse_matches_closed_form(tmp_path, bias):
    labels = _write(tmp_path, DIST)
    common = ["--labels", labels, "--loss", "mse", "--lambda-w", "3e-3", "--lambda-h", "7e-3"]
    nb = [] if bias else ["--no-bias"]
    assert main(["solve", *common, "--dim", "6", "--out", str(tmp_path / "s.npz"), *nb]) == 0
    assert main(["closed-form", *common, "--out", str(tmp_path / "cf.npz"), *nb]) == 0
    s = np.load(tmp_path / "s.npz")
    cf = np.load(tmp_path / "cf.npz")
    W, H, b = s["W"], s["H"], s["b"]
    assert W.shape == (4, 6) and H.shape == (7, 6)
    # THEORY §4 / issue: 1e-7 relative on Grams and logits, 1e-10 absolute on F
    assert _rel(W @ W.T, cf["gram_W"]) <= 1e-7
    assert _rel(H @ H.T, cf["gram_H"]) <= 1e-7
    assert _rel(H @ W.T + b, cf["logits"]) <= 1e-7
    assert abs(float(s["objective"]) - float(cf["objective"])) <= 1e-10
    assert bool(s["converged"]) and float(s["grad_norm"]) <= 1e-10
    meta = json.loads((tmp_path / "s.json").read_text())
    for key in ("config", "seed", "mlnc_jax_version", "jax_version", "device", "dtype", "wall_time_s"):
        assert key in meta
    assert meta["dtype"] == "float64"
    assert meta["config"]["bias"] is bias


def test_solve_pal_certificate(tmp_path):
    labels = _write(tmp_path, DIST)
    out = tmp_path / "pal.npz"
    assert main(["solve", "--labels", labels, "--loss", "pal", "--dim", "6", "--lambda-w", "5e-3",
                 "--lambda-h", "5e-3", "--out", str(out)]) == 0
    r = np.load(out)
    assert abs(float(r["certificate"]) - 1) <= 1e-6  # THEORY §3


def test_solve_method_and_init_options(tmp_path):
    """`--method matrix_free --init mse` reaches the same certified optimum as the default,
    and the results file records both options."""
    labels = _write(tmp_path, DIST)
    common = ["solve", "--labels", labels, "--loss", "bce", "--dim", "4", "--lambda-w", "5e-3",
              "--lambda-h", "5e-3", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "a.npz")]) == 0
    assert main([*common, "--method", "matrix_free", "--init", "mse",
                 "--out", str(tmp_path / "b.npz")]) == 0
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert bool(a["certified"]) and bool(b["certified"])
    np.testing.assert_allclose(float(b["objective"]), float(a["objective"]), rtol=1e-12)
    meta = json.loads((tmp_path / "b.json").read_text())
    assert meta["method"] == "matrix_free" and meta["init"] == "mse"


BAD = {
    "negative weight": ({**DIST, "weights": [1, -1, 1, 1, 1, 1, 1]}, "negative"),
    "nan weight": ('{"num_classes": 2, "label_sets": [[0], [1]], "weights": [1, NaN]}', "nan"),
    "zero weights": ({**DIST, "weights": [0] * 7}, "zero"),
    "label out of range": ({**DIST, "label_sets": [[0], [1], [2], [4], [0, 1], [2, 3], [1, 2]]}, "outside"),
    "duplicate sets": ({**DIST, "label_sets": [[0], [1], [2], [3], [0, 1], [1, 0], [1, 2]]}, "duplicate"),
    "mismatched lengths": ({**DIST, "weights": [1, 2, 3]}, "lengths"),
    "malformed json": ('{"num_classes": 4, "label_sets": [[0], [1]', "malformed"),
    "missing key": ({"num_classes": 4, "label_sets": [[0]]}, "weights"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_distribution_files(tmp_path, capsys, case):
    obj, word = BAD[case]
    labels = _write(tmp_path, obj)
    out = tmp_path / "r.npz"
    code = main(["solve", "--labels", labels, "--loss", "mse", "--dim", "3", "--lambda-w", "1e-3",
                 "--lambda-h", "1e-3", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and word in err.lower() and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "r.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["dist.json"]


@pytest.mark.parametrize("args,word", [
    (["--dim", "0"], "--dim"),
    (["--lambda-w", "-1"], "--lambda-w"),
    (["--lambda-h", "nan"], "--lambda-h"),
    (["--lambda-w", "0"], "lambda_w"),
    (["--loss", "hinge"], "--loss"),
    (["--tol", "0"], "--tol"),
])
def test_bad_options(tmp_path, capsys, args, word):
    labels = _write(tmp_path, DIST)
    out = tmp_path / "r.npz"
    base = {"--loss": "mse", "--dim": "3", "--lambda-w": "1e-3", "--lambda-h": "1e-3"}
    base.update(dict(zip(args[::2], args[1::2])))
    argv = ["solve", "--labels", labels, "--out", str(out)] + [x for kv in base.items() for x in kv]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and word in err, err
    assert not out.exists()


def test_empty_set_with_pal_normalized(tmp_path, capsys):
    labels = _write(tmp_path, {"num_classes": 3, "label_sets": [[], [0], [1], [2]], "weights": [1, 1, 1, 1]})
    out = tmp_path / "r.npz"
    code = main(["solve", "--labels", labels, "--loss", "pal_normalized", "--dim", "3",
                 "--lambda-w", "1e-3", "--lambda-h", "1e-3", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "empty label set" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_missing_file_and_bad_out(tmp_path, capsys):
    code = main(["closed-form", "--labels", str(tmp_path / "nope.json"), "--loss", "mse",
                 "--lambda-w", "1e-3", "--lambda-h", "1e-3", "--out", str(tmp_path / "cf.npz")])
    assert code == 2 and "no such file" in capsys.readouterr().err
    labels = _write(tmp_path, DIST)
    code = main(["closed-form", "--labels", labels, "--loss", "mse", "--lambda-w", "1e-3",
                 "--lambda-h", "1e-3", "--out", str(tmp_path / "missing" / "cf.npz")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_closed_form_refuses_bce(tmp_path, capsys):
    labels = _write(tmp_path, DIST)
    out = tmp_path / "cf.npz"
    code = main(["closed-form", "--labels", labels, "--loss", "bce", "--lambda-w", "1e-3",
                 "--lambda-h", "1e-3", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "no closed form is known" in err and not out.exists()


@pytest.mark.skipif(shutil.which("mlnc-jax") is None and not (Path(sys.executable).parent / "mlnc-jax").exists(),
                    reason="console script not installed")
def test_console_script_no_traceback(tmp_path):
    exe = shutil.which("mlnc-jax") or str(Path(sys.executable).parent / "mlnc-jax")
    labels = _write(tmp_path, {**DIST, "weights": [1, -1, 1, 1, 1, 1, 1]})
    p = subprocess.run([exe, "solve", "--labels", labels, "--loss", "mse", "--dim", "2",
                        "--lambda-w", "1e-3", "--lambda-h", "1e-3", "--out", str(tmp_path / "x.npz")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "negative" in p.stderr
    assert p.stdout == ""


def test_spectrum_json_is_one_object(tmp_path, capsys):
    labels = _write(tmp_path, DIST)
    assert main(["spectrum", "--labels", labels, "--json"]) == 0
    out = capsys.readouterr().out
    obj = json.loads(out)  # exactly one JSON document on stdout
    assert set(obj) == {"num_classes", "class_frequencies", "mean_multiplicity", "multiplicity_mass",
                        "kappa", "kappa_all", "isotropy_defect", "spectrum", "collapse_threshold"}
    assert set(obj["kappa"]) == {"1", "2"} and set(obj["collapse_threshold"]) == {"pal", "pal_normalized", "bce", "mse"}
    # independent numpy computation of kappa_1 (THEORY §1): smallest eigenvalue of C_1 on 1-perp
    Y = np.zeros((7, 4))
    for r, s in enumerate(DIST["label_sets"]):
        Y[r, s] = 1
    w = np.asarray(DIST["weights"], float) / sum(DIST["weights"])
    one = Y.sum(1) == 1
    w1 = w[one] / w[one].sum()
    p1 = w1 @ Y[one]
    C1 = (Y[one] * w1[:, None]).T @ Y[one] - np.outer(p1, p1)
    Q = np.linalg.qr(np.vstack([np.ones(4), np.eye(4)[:3]]).T)[0][:, 1:]
    assert abs(obj["kappa"]["1"] - np.linalg.eigvalsh(Q.T @ C1 @ Q)[0]) <= 1e-12


def test_spectrum_accepts_label_matrix_and_table(tmp_path, capsys):
    Y = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]], dtype=np.uint8)
    np.save(tmp_path / "Y.npy", Y)
    assert main(["spectrum", "--labels", str(tmp_path / "Y.npy")]) == 0
    assert "kappa_m" in capsys.readouterr().out
    assert main(["spectrum", "--labels", "scene", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_classes"] == 6
    np.save(tmp_path / "bad.npy", np.array([[2, 0]]))
    assert main(["spectrum", "--labels", str(tmp_path / "bad.npy")]) == 2
    assert "only 0 and 1" in capsys.readouterr().err
