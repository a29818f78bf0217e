"""Label distributions (THEORY §1): constructors, JSON, generators, sampling, bad input."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from mlnc_jax.model import labels as L
from mlnc_jax.model.errors import InputError
from mlnc_jax.model.labels import LabelDistribution

# -- multiclass ----------------------------------------------------------------------------


def test_multiclass_is_one_singleton_per_class_with_count_weights():
    d = L.multiclass([10, 10, 1, 1])
    assert d.num_classes == 4 and d.num_sets == 4
    np.testing.assert_array_equal(np.asarray(d.label_sets), np.eye(4))
    np.testing.assert_allclose(np.asarray(d.weights), np.array([10, 10, 1, 1]) / 22, rtol=1e-15)


@pytest.mark.parametrize("counts", [[3], [3, 0], [3, -1], [3, float("nan")], [[1, 2]]])
def test_multiclass_refuses_bad_counts(counts):
    with pytest.raises(InputError):
        L.multiclass(counts)


# -- from_sets -----------------------------------------------------------------------------


def test_from_sets_keeps_order_drops_zero_weights_and_normalises_counts():
    sets = [[2], [0, 1], [1], [3, 0], [2, 3]]
    counts = [5, 0, 3, 2, 10]
    d = LabelDistribution.from_sets(sets, counts, 4)
    # order kept, zero-weight [0, 1] dropped, labels inside a set sorted
    assert d.sets == [[2], [1], [0, 3], [2, 3]]
    assert d.num_sets == 4
    np.testing.assert_allclose(d.weights, np.array([5, 3, 2, 10]) / 20, rtol=0, atol=1e-15)
    assert abs(float(np.sum(d.weights)) - 1.0) <= 1e-15
    expect_Y = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 1, 1]], float)
    np.testing.assert_array_equal(np.asarray(d.label_sets), expect_Y)
    np.testing.assert_array_equal(d.multiplicities, [1, 1, 2, 2])
    # p = Σ π_s y_s
    np.testing.assert_allclose(d.class_frequencies, np.array([2, 3, 15, 12]) / 20, atol=1e-15)


def test_from_sets_merge_duplicates_adds_weights():
    d = LabelDistribution.from_sets([[1], [0], [1]], [1, 2, 3], 2, merge_duplicates=True)
    assert d.sets == [[1], [0]]
    np.testing.assert_allclose(d.weights, [4 / 6, 2 / 6], atol=1e-15)


def test_from_sets_empty_set_is_a_valid_label_set():
    d = LabelDistribution.from_sets([[], [0]], [1, 3], 2)
    assert d.sets == [[], [0]]
    np.testing.assert_array_equal(d.multiplicities, [0, 1])


def test_from_label_matrix_unique_rows_and_counts():
    Y = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 0], [0, 1, 1], [1, 0, 0], [0, 1, 0]],
                 dtype=np.uint8)
    d = LabelDistribution.from_label_matrix(Y)
    got = {tuple(s): float(w) for s, w in zip(d.sets, d.weights)}
    assert got == pytest.approx({(): 1 / 7, (0,): 3 / 7, (1,): 1 / 7, (1, 2): 2 / 7}, abs=1e-15)
    assert d.num_sets == 4 and d.num_classes == 3
    # rows are distinct and reproduce the label matrix's class frequencies
    assert len({tuple(s) for s in d.sets}) == d.num_sets
    np.testing.assert_allclose(d.class_frequencies, Y.mean(0), atol=1e-15)
    # documented order: by multiplicity, then lexicographically
    assert d.sets == [[], [0], [1], [1, 2]]


def test_json_round_trip(tmp_path):
    d = L.random_correlated(5, 3, max_multiplicity=3)
    path = tmp_path / "dist.json"
    d.save(path)
    raw = json.loads(path.read_text())
    assert raw["num_classes"] == 5 and len(raw["label_sets"]) == d.num_sets
    e = LabelDistribution.load(path)
    assert e.num_classes == d.num_classes
    assert e.sets == d.sets
    np.testing.assert_allclose(e.weights, d.weights, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(np.asarray(e.label_sets), np.asarray(d.label_sets))
    f = LabelDistribution.from_dict(d.to_dict())
    assert f.sets == d.sets


# -- generators ------------------------------------------------------------------------------


def test_balanced_weights():
    K, mass = 5, {1: 0.5, 2: 0.3, 3: 0.2}
    d = L.balanced(K, mass)
    assert d.num_sets == 5 + 10 + 10
    for s, w in zip(d.sets, d.weights):
        m = len(s)
        assert w == pytest.approx(mass[m] / math.comb(K, m), rel=1e-14)
    # each m-slice is present in full
    for m in mass:
        assert {tuple(s) for s in d.sets if len(s) == m} == set(itertools.combinations(range(K), m))
    # check value of THEORY §1: C_m = m(K−m)/(K(K−1)) P for all m-subsets equally likely
    Y = np.asarray(d.label_sets)
    w = np.asarray(d.weights)
    P = np.eye(K) - 1 / K
    for m in mass:
        sl = d.multiplicities == m
        wm = w[sl] / w[sl].sum()
        pm = wm @ Y[sl]
        Cm = (Y[sl] * wm[:, None]).T @ Y[sl] - np.outer(pm, pm)
        np.testing.assert_allclose(Cm, m * (K - m) / (K * (K - 1)) * P, atol=1e-14)


@pytest.mark.parametrize("kind", ["step", "exponential"])
@pytest.mark.parametrize("ratio", [10.0, 100.0])
def test_singleton_imbalance_ratio(kind, ratio):
    K, mass = 6, {1: 0.6, 2: 0.3, 3: 0.1}
    d = L.singleton_imbalance(K, ratio, kind=kind, multiplicity_mass=mass)
    w = np.asarray(d.weights)
    m = d.multiplicities
    single = {s[0]: wi for s, wi in zip(d.sets, w) if len(s) == 1}
    assert sorted(single) == list(range(K))
    sw = np.array([single[k] for k in range(K)])
    assert sw.max() / sw.min() == pytest.approx(ratio, rel=1e-12)
    assert sw.sum() == pytest.approx(mass[1], rel=1e-12)
    if kind == "step":
        np.testing.assert_allclose(sw[: K // 2], sw.max(), rtol=1e-14)
        np.testing.assert_allclose(sw[K // 2:], sw.min(), rtol=1e-14)
    else:
        assert np.all(np.diff(sw) < 0)
        # geometric decay: constant ratio between neighbours
        np.testing.assert_allclose(sw[1:] / sw[:-1], ratio ** (-1 / (K - 1)), rtol=1e-12)
    # higher multiplicities balanced
    for mm in (2, 3):
        np.testing.assert_allclose(w[m == mm], mass[mm] / math.comb(K, mm), rtol=1e-12)
    assert w.sum() == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("K,max_m", [(4, 3), (6, 2), (7, 3)])
def test_random_correlated_support_and_reproducible(K, max_m):
    d1 = L.random_correlated(K, 11, max_multiplicity=max_m)
    d2 = L.random_correlated(K, 11, max_multiplicity=max_m)
    d3 = L.random_correlated(K, 12, max_multiplicity=max_m)
    assert d1.sets == d2.sets
    np.testing.assert_array_equal(d1.weights, d2.weights)
    assert not np.allclose(d1.weights, d3.weights)
    want = {S for m in range(1, max_m + 1) for S in itertools.combinations(range(K), m)}
    assert {tuple(s) for s in d1.sets} == want
    assert d1.num_sets == len(want)
    assert np.all(np.asarray(d1.weights) > 0)
    assert float(np.sum(d1.weights)) == pytest.approx(1.0, abs=1e-14)


def test_sample_labels_frequencies():
    d = L.random_correlated(4, 5, max_multiplicity=2)
    N = 20000
    Y, idx = L.sample_labels(d, N, seed=123)
    assert Y.shape == (N, 4) and Y.dtype == np.uint8 and idx.shape == (N,)
    np.testing.assert_array_equal(Y, np.asarray(d.label_sets)[idx].astype(np.uint8))
    freq = np.bincount(idx, minlength=d.num_sets) / N
    w = np.asarray(d.weights)
    # 6 binomial standard deviations per set: a false alarm has probability < 1e-7 per set
    sd = np.sqrt(w * (1 - w) / N)
    assert np.all(np.abs(freq - w) <= 6 * sd + 1e-12)
    # same seed, same draw; other seed, other draw
    Y2, idx2 = L.sample_labels(d, N, seed=123)
    np.testing.assert_array_equal(idx, idx2)
    _, idx3 = L.sample_labels(d, N, seed=124)
    assert np.any(idx != idx3)
    # the empirical distribution is close to the source
    e = LabelDistribution.from_label_matrix(Y)
    np.testing.assert_allclose(e.class_frequencies, d.class_frequencies, atol=0.03)


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sets,weights,K,pattern",
    [
        ([[0], [1]], [1.0, -0.5], 2, "negative"),
        ([[0], [1]], [1.0, float("nan")], 2, "NaN"),
        ([[0], [1]], [1.0, float("inf")], 2, "inf"),
        ([[0], [1]], [0.0, 0.0], 2, "zero"),
        ([[0], [1, 2]], [1.0, 1.0], 2, r"label 2 outside \[0, 2\)"),
        ([[0], [-1]], [1.0, 1.0], 2, r"label -1 outside"),
        ([[0, 1], [1, 0]], [1.0, 1.0], 2, "duplicate label set"),
        ([[0], [1], [0, 1]], [1.0, 1.0], 2, "lengths must match"),
        ([[0, 0]], [1.0], 2, "repeats a label"),
        ([[0.5]], [1.0], 2, "non-integer"),
        ([], [], 2, "no label sets"),
        ([[0]], [1.0], 0, "num_classes"),
    ],
)
def test_from_sets_bad_input(sets, weights, K, pattern):
    with pytest.raises(InputError, match=pattern):
        LabelDistribution.from_sets(sets, weights, K)


@pytest.mark.parametrize(
    "text,pattern",
    [
        ('{"num_classes": 3, "label_sets": [[0], [1]], "weights": [1, 2]', "malformed JSON"),
        ("not json at all", "malformed JSON"),
        ('[1, 2, 3]', "must be an object"),
        ('{"num_classes": 3, "label_sets": [[0]]}', "weights"),
        ('{"num_classes": 3, "label_sets": [[0], [5]], "weights": [1, 1]}', "outside"),
        ('{"num_classes": 3, "label_sets": [[0], [1]], "weights": [1]}', "lengths must match"),
    ],
)
def test_load_bad_json(tmp_path, text, pattern):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputError, match=pattern):
        LabelDistribution.load(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        LabelDistribution.load(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "Y,pattern",
    [(np.array([[0, 2], [1, 0]]), "only 0 and 1"), (np.zeros((0, 3)), "non-empty"),
     (np.array([1, 0, 1]), "non-empty")],
)
def test_from_label_matrix_bad_input(Y, pattern):
    with pytest.raises(InputError, match=pattern):
        LabelDistribution.from_label_matrix(Y)


def test_generator_bad_input():
    with pytest.raises(InputError, match="ratio"):
        L.singleton_imbalance(4, 0.5)
    with pytest.raises(InputError, match="kind"):
        L.singleton_imbalance(4, 2.0, kind="linear")
    with pytest.raises(InputError, match="max_multiplicity"):
        L.random_correlated(4, 0, max_multiplicity=5)
    with pytest.raises(InputError, match="negative|non-negative"):
        L.balanced(4, {1: 1.0, 2: -0.5})
    with pytest.raises(InputError, match="multiplicity 7"):
        L.balanced(4, {7: 1.0})
    with pytest.raises(InputError, match="num_samples"):
        L.sample_labels(L.balanced(3, {1: 1.0}), 0)


def test_load_directory_is_input_error(tmp_path):
    with pytest.raises(InputError):
        LabelDistribution.load(tmp_path)


@pytest.mark.parametrize("sets,K", [
    pytest.param([[0], [1]], 2.5, id="fractional-num_classes"),
    pytest.param([[np.float32(0.5)], [1]], 2, id="fractional-float32-label"),
])
def test_fractional_input_is_rejected(sets, K):
    with pytest.raises(InputError):
        LabelDistribution.from_sets(sets, [1.0, 1.0], K)
