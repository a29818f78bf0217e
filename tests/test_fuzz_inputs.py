"""Property-based fuzzing of every input format: distribution JSON, label matrices and sweep
configs. Valid input parses to the distribution of the reference construction; invalid input
raises `InputError` and nothing else. `MLNC_FUZZ_EXAMPLES` raises the number of examples
(default: a few hundred per property, bounded time in CI)."""

import itertools
import json
import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st

from mlnc_jax.app import sweep as sw
from mlnc_jax.io import schema
from mlnc_jax.io.real_labels import load_labels
from mlnc_jax.model.errors import InputError
from mlnc_jax.model.labels import LabelDistribution

N = int(os.environ.get("MLNC_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=N, deadline=None, derandomize="MLNC_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# anything JSON can hold, including the hostile values of the issue (NaN, inf, 1e308, huge ints)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                        st.sampled_from([10**400, 2**63, -1, 0, 1, 5]),
                        st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([1e308, -1e308, 5e-324, 1e-320]),
                        st.text(max_size=5), st.sampled_from(["12", "4", "0", "x", ""]))
json_value = st.recursive(json_scalar, lambda c: st.one_of(st.lists(c, max_size=4),
                                                           st.dictionaries(st.text(max_size=4), c, max_size=4)),
                          max_leaves=12)


@st.composite
def valid_distribution(draw):
    K = draw(st.integers(1, 6))
    subsets = [list(s) for m in range(K + 1) for s in itertools.combinations(range(K), m)]
    idx = draw(st.lists(st.integers(0, len(subsets) - 1), min_size=1, max_size=min(8, len(subsets)),
                        unique=True))
    sets = [draw(st.permutations(subsets[i])) for i in idx]
    weight = st.one_of(st.integers(0, 10**6), st.floats(0, 1e308, allow_nan=False, allow_infinity=False))
    weights = draw(st.lists(weight, min_size=len(sets), max_size=len(sets)))
    if not any(w > 0 for w in weights):
        weights[draw(st.integers(0, len(sets) - 1))] = draw(st.sampled_from([1, 2.5, 1e308]))
    return {"num_classes": K, "label_sets": sets, "weights": weights}


def _mutations(d):
    """One-field corruptions of a valid distribution that must all be refused."""
    K, sets, w = d["num_classes"], d["label_sets"], d["weights"]
    return [
        {**d, "num_classes": str(K)}, {**d, "num_classes": float(K)}, {**d, "num_classes": True},
        {**d, "num_classes": 0},
        {**d, "weights": [str(x) for x in w]}, {**d, "weights": [[x] for x in w]},
        {**d, "weights": w + [1]}, {**d, "weights": [float("nan")] + w[1:]},
        {**d, "weights": [float("inf")] + w[1:]}, {**d, "weights": [-1] + w[1:]},
        {**d, "weights": [0] * len(w)}, {**d, "weights": [True] * len(w)},
        {**d, "label_sets": [str(s) for s in sets]}, {**d, "label_sets": sets + [sets[0]]},
        {**d, "label_sets": [[K]] + sets[1:]}, {**d, "label_sets": [[0.0]] + sets[1:]},
        {**d, "label_sets": [{"0": 1}] + sets[1:]},
        {k: v for k, v in d.items() if k != "weights"}, [d], json.dumps(d),
    ]


def _reference(d):
    """The distribution built directly, with numpy, from the same JSON."""
    K = d["num_classes"]
    w = np.array(d["weights"], dtype=np.float64)
    w = w / w.max()
    keep = w > 0
    Y = np.zeros((len(d["label_sets"]), K))
    for r, s in enumerate(d["label_sets"]):
        Y[r, s] = 1
    return Y[keep], w[keep] / w[keep].sum()


@FUZZ
@given(valid_distribution())
def test_valid_distribution_json_parses_to_the_reference(d):
    text = json.dumps(d)
    got = schema.parse_distribution(json.loads(text))
    Y, w = _reference(d)
    np.testing.assert_array_equal(got.label_sets, Y)
    np.testing.assert_allclose(got.weights, w, rtol=1e-14, atol=0)
    ref = LabelDistribution.from_sets(d["label_sets"], d["weights"], d["num_classes"])
    assert got.sets == ref.sets and np.array_equal(got.weights, ref.weights)
    for bad in _mutations(d):
        with pytest.raises(InputError):
            schema.parse_distribution(bad)


@FUZZ
@given(st.dictionaries(st.sampled_from(["num_classes", "label_sets", "weights", "name", "x"]),
                       json_value, max_size=4))
def test_random_json_objects_raise_only_input_error(obj):
    try:
        d = schema.parse_distribution(obj)
    except InputError:
        return
    # accepted: then it really is a distribution
    assert np.isclose(np.sum(d.weights), 1.0) and np.all(np.asarray(d.weights) > 0)


@FUZZ
@given(json_value)
def test_any_json_document_raises_only_input_error(tmp_path_factory, value):
    p = tmp_path_factory.mktemp("fz") / "d.json"
    p.write_text(json.dumps(value))
    try:
        load_labels(p)
    except InputError:
        pass


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(["d.json", "y.npy", "y.npz"]))
def test_random_bytes_raise_only_input_error(tmp_path_factory, data, name):
    p = tmp_path_factory.mktemp("fz") / name
    p.write_bytes(data)
    with pytest.raises(InputError):
        load_labels(p)


@FUZZ
@given(st.integers(1, 30), st.integers(1, 6), st.data())
def test_valid_label_matrices_parse_to_the_reference(N, K, data):
    Y = np.array(data.draw(st.lists(st.lists(st.integers(0, 1), min_size=K, max_size=K),
                                    min_size=N, max_size=N)), dtype=data.draw(st.sampled_from(
                                        [np.uint8, np.int64, np.float64, bool])))
    got = schema.parse_label_matrix(Y)
    rows, counts = np.unique(Y.astype(np.uint8), axis=0, return_counts=True)
    want = {tuple(np.flatnonzero(r)): c / N for r, c in zip(rows, counts)}
    assert {tuple(s): w for s, w in zip(got.sets, got.weights)} == pytest.approx(want, rel=1e-14)
    np.testing.assert_allclose(got.class_frequencies, Y.astype(float).mean(0), rtol=1e-12, atol=1e-15)


@FUZZ
@given(st.one_of(
    st.lists(st.lists(st.one_of(st.integers(-3, 3), st.floats(allow_nan=True)), min_size=1, max_size=4),
             min_size=1, max_size=4),
    st.lists(st.integers(0, 1), max_size=5)))
def test_random_label_matrices_raise_only_input_error(rows):
    try:
        Y = np.array(rows)
    except ValueError:  # ragged: not an array at all
        return
    try:
        d = schema.parse_label_matrix(Y)
    except InputError:
        return
    assert Y.ndim == 2 and np.all((Y == 0) | (Y == 1)) and d.num_classes == Y.shape[1]


SWEEP_KEYS = ["distributions", "losses", "dim", "lambda_w", "lambda_h", "lambda_b", "bias", "seeds",
              "tol", "chunk_size", "extra"]
GEN = st.fixed_dictionaries({"generator": st.sampled_from(["random_correlated", "balanced",
                                                           "singleton_imbalance", "nope", 3])},
                            optional={"num_classes": st.one_of(st.integers(-1, 5), json_scalar),
                                      "seed": st.one_of(st.integers(-1, 3), json_scalar),
                                      "ratio": json_scalar, "max_multiplicity": json_scalar,
                                      "multiplicity_mass": json_value, "kind": json_scalar})
VALID_SWEEP = {"distributions": [{"generator": "random_correlated", "num_classes": 3, "seed": 0}],
               "losses": ["mse"], "dim": 2, "lambda_w": 0.01, "lambda_h": 0.01}


@FUZZ
@given(st.dictionaries(st.sampled_from(SWEEP_KEYS), st.one_of(json_value, st.lists(GEN, max_size=2)),
                       max_size=6))
def test_random_sweep_configs_raise_only_input_error(tmp_path_factory, patch):
    cfg = {**VALID_SWEEP, **patch}
    try:
        m = sw.expand_sweep(cfg)
    except InputError:
        return
    assert m["problems"] and sorted(i for c in m["chunks"] for i in c) == list(range(len(m["problems"])))


@FUZZ
@given(st.integers(2, 5), st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=3, unique=True),
       st.floats(1e-6, 1.0), st.integers(1, 4))
def test_valid_sweep_configs_expand_to_the_reference(K, seeds, lam, chunk):
    cfg = {"distributions": [{"generator": "random_correlated", "num_classes": K, "seed": seeds}],
           "losses": ["mse", "pal"], "dim": 2, "lambda_w": lam, "lambda_h": lam, "chunk_size": chunk}
    m = sw.expand_sweep(cfg)
    from mlnc_jax.model.labels import random_correlated

    assert len(m["problems"]) == 2 * len(seeds)
    for s, dd in zip(seeds, m["distributions"]):
        ref = random_correlated(K, s)
        got = LabelDistribution.from_dict(dd)
        assert got.sets == ref.sets
        np.testing.assert_allclose(got.weights, ref.weights, rtol=1e-15, atol=0)
    assert all(len(c) <= chunk for c in m["chunks"])
