"""The input schema: strict JSON types, overflow-free weights, memory estimates, lambdas, seeds."""

import json
import math
import sys
import warnings

import numpy as np
import pytest

from mlnc_jax.io import schema
from mlnc_jax.io.real_labels import load_labels
from mlnc_jax.model.errors import InputError
from mlnc_jax.model.labels import LabelDistribution

OK = {"num_classes": 4, "label_sets": [[0], [1], [2, 3]], "weights": [40, 30, 30]}


def test_huge_weights_normalise_without_overflow():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old sum overflowed with a RuntimeWarning
        d = schema.parse_distribution({"num_classes": 2, "label_sets": [[0], [1]],
                                       "weights": [1e308, 1e308]})
        e = LabelDistribution.from_sets([[0], [1], [0]], [1e308, 1e308, 1e308], 2,
                                        merge_duplicates=True)
    np.testing.assert_array_equal(d.weights, [0.5, 0.5])
    np.testing.assert_allclose(e.weights, [2 / 3, 1 / 3], rtol=1e-15)
    tiny = schema.parse_distribution({"num_classes": 2, "label_sets": [[0], [1]],
                                      "weights": [5e-324, 5e-324]})
    np.testing.assert_array_equal(tiny.weights, [0.5, 0.5])


@pytest.mark.parametrize("patch,word", [
    ({"weights": ["40", "30", "30"]}, "must be a number"),
    ({"weights": [True, False, True]}, "must be a number"),
    ({"weights": [[40], [30], [30]]}, "must be a number"),
    ({"weights": [10**400, 1, 1]}, "too large"),
    ({"weights": "40 30 30"}, "list"),
    ({"weights": {"a": 1}}, "list"),
    ({"label_sets": ["12", [1], [2]]}, "label set #0"),
    ({"label_sets": [{"0": 1}, [1], [2]]}, "label set #0"),
    ({"label_sets": [[0.0], [1], [2]]}, "non-integer"),
    ({"label_sets": [[True], [1], [2]]}, "non-integer"),
    ({"label_sets": [[0], [1], None]}, "label set #2"),
    ({"num_classes": "4"}, "num_classes must be an integer"),
    ({"num_classes": 4.0}, "num_classes must be an integer"),
    ({"num_classes": True}, "num_classes must be an integer"),
    ({"num_classes": 0}, "num_classes must be >= 1"),
])
def test_distribution_json_types_are_strict(patch, word):
    with pytest.raises(InputError, match=word):
        schema.parse_distribution({**OK, **patch})


def test_false_weight_no_longer_drops_a_set_silently():
    with pytest.raises(InputError, match="weight #0 must be a number"):
        LabelDistribution.from_sets([[0], [1]], [True, False], 2)


def test_label_set_string_is_not_a_set_of_digits(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"num_classes": 13, "label_sets": ["12", [3]], "weights": [1, 1]}))
    with pytest.raises(InputError, match="must be a list of integers"):
        load_labels(p)


def test_numpy_inputs_still_accepted():
    d = LabelDistribution.from_sets([np.array([0, 1]), (2,)], np.array([3, 1], dtype=np.int64),
                                    np.int64(3))
    assert d.sets == [[0, 1], [2]] and np.allclose(d.weights, [0.75, 0.25])


@pytest.mark.parametrize("lw,lh,lb,word", [
    (1e-320, 1e-320, 0.0, "not a normal positive"),
    (1e-160, 1e-160, 0.0, "not a normal positive"),
    (1e200, 1e200, 0.0, "not a normal positive"),
    (0.0, 1.0, 0.0, "lambda_w must be > 0"),
    (1.0, float("nan"), 0.0, "lambda_h must be finite"),
    (1.0, 1.0, -1.0, "lambda_b must be >= 0"),
    ("1", 1.0, 0.0, "lambda_w must be a number"),
    (True, 1.0, 0.0, "lambda_w must be a number"),
])
def test_check_lambdas_refuses(lw, lh, lb, word):
    with pytest.raises(InputError, match=word):
        schema.check_lambdas(lw, lh, lb)


def test_check_lambdas_accepts_the_normal_range():
    lw, lh, lb = schema.check_lambdas(1e-150, 1e-150, 0)
    assert lw * lh >= sys.float_info.min and isinstance(lb, float)
    assert schema.check_lambdas(np.float64(5e-3), 5e-3) == (5e-3, 5e-3, 0.0)


def test_seeds():
    assert schema.check_seed(2**63 - 1) == 2**63 - 1
    for bad in (2**63, 1180591620717411303424, -1, 1.0, "3", True):
        with pytest.raises(InputError, match="seed"):
            schema.check_seed(bad)


def test_tol():
    assert schema.check_tol(1e-10) == 1e-10
    for bad in (float("inf"), float("nan"), 0.0, -1.0, "1e-3"):
        with pytest.raises(InputError, match="tol"):
            schema.check_tol(bad)


def test_memory_estimate_refuses_with_the_estimate(monkeypatch):
    from mlnc_jax.theory.spectra import label_spectrum

    d = LabelDistribution.from_sets([[0], [1]], [1, 1], 10**7)  # [2, 1e7]: 640 MB, fine
    with pytest.raises(InputError, match=r"label spectrum of K = 10000000 .* about \d.*[ZEP]iB"):
        label_spectrum(d)
    assert schema.estimate_solve_bytes(4, 7, 10**9) > 5e11  # 8·(T·10·d + 4·K·d) bytes
    monkeypatch.setenv("MLNC_MAX_MEMORY_GB", "0.001")
    with pytest.raises(InputError, match="MLNC_MAX_MEMORY_GB"):
        LabelDistribution.from_sets([[0], [1]], [1, 1], 10**5)
    monkeypatch.setenv("MLNC_MAX_MEMORY_GB", "zero")
    with pytest.raises(InputError, match="MLNC_MAX_MEMORY_GB must be a number"):
        schema.memory_limit_bytes()


def test_label_matrix_files(tmp_path):
    Y = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]], dtype=np.uint8)
    np.savez(tmp_path / "ok.npz", labels=Y)
    np.savez(tmp_path / "nokey.npz", Y=Y)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "str.npy", np.array([["1", "0"]]))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    d = load_labels(tmp_path / "ok.npz")
    assert d.sets == [[0], [1, 2]] and np.allclose(d.weights, [2 / 3, 1 / 3])
    for name, word in [("nokey.npz", "no array 'labels'"), ("obj.npy", "cannot read"),
                       ("str.npy", "0/1 numbers"), ("junk.npz", "cannot read"),
                       ("junk.npy", "cannot read"), ("missing.npy", "no such file")]:
        with pytest.raises(InputError, match=word):
            load_labels(tmp_path / name)
    with pytest.raises(InputError, match="only 0 and 1"):
        schema.parse_label_matrix(np.array([[0.5, 1.0]]))
    with pytest.raises(InputError, match="only 0 and 1"):
        schema.parse_label_matrix(np.array([[np.nan, 1.0]]))


def test_deep_or_huge_json_is_an_input_error(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(InputError):
        LabelDistribution.load(p)
    p.write_text('{"num_classes": ' + "9" * 5000 + ', "label_sets": [[0]], "weights": [1]}')
    with pytest.raises(InputError):
        LabelDistribution.load(p)


def test_empty_only_distribution_is_refused_where_degenerate():
    from mlnc_jax import UFMConfig
    from mlnc_jax.theory.closed_forms import closed_form
    from mlnc_jax.theory.spectra import label_spectrum

    d = LabelDistribution.from_label_matrix(np.zeros((4, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="only the empty label set"):
        label_spectrum(d)
    with pytest.raises(InputError, match="only the empty label set"):
        closed_form(d, UFMConfig("pal", 3, 1e-3, 1e-3))
    assert math.isfinite(closed_form(d, UFMConfig("mse", 3, 1e-3, 1e-3)).objective)
