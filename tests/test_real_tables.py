"""Shipped real label tables: faithful to the label matrices they were derived from."""

from pathlib import Path

import numpy as np
import pytest

from mlnc_jax import LabelDistribution
from mlnc_jax.io.real_labels import available, load_real, real_metadata

SHARED = [Path(__file__).resolve().parents[2] / "shared" / "data" / "real-labels",
          Path(__file__).resolve().parents[1] / "shared" / "data" / "real-labels"]


def _source():
    for p in SHARED:
        if (p / "SOURCES.json").exists():
            return p
    pytest.skip("real label matrices (../shared/data/real-labels) not present")


def test_tables_shipped():
    names = available()
    for required in ("voc2007_trainval", "yeast", "emotions", "scene"):
        assert required in names
    for name in names:
        meta = real_metadata(name)
        d = load_real(name)
        assert d.num_classes == meta["num_classes"] == len(meta["class_names"])
        assert "source" in meta["provenance"]
        assert np.isclose(d.weights.sum(), 1.0)


@pytest.mark.parametrize("name", ["emotions", "scene", "yeast", "voc2007_trainval"])
def test_tables_match_label_matrices(name):
    Y = np.load(_source() / f"{name}_labels.npy")
    ref = LabelDistribution.from_label_matrix(Y)
    d = load_real(name)
    assert d.sets == ref.sets
    np.testing.assert_allclose(d.weights, ref.weights, rtol=0, atol=1e-15)
    assert real_metadata(name)["num_samples"] == Y.shape[0]
    np.testing.assert_allclose(d.class_frequencies, Y.mean(0), rtol=0, atol=1e-14)


@pytest.mark.parametrize("name,K", [("bibtex", 159), ("delicious", 983)])
def test_large_tables_match_their_label_matrices(name, K):
    import json

    from mlnc_jax.io.real_labels import load_labels

    d = load_real(name)
    meta = real_metadata(name)
    assert d.num_classes == K == len(meta["class_names"])
    assert meta["num_sets"] == meta["provenance"]["distinct_label_sets"] == d.num_sets
    assert meta["num_samples"] == meta["provenance"]["N"]
    assert load_labels(name).sets == d.sets  # `--labels bibtex` resolves to the table
    src = _source()
    assert json.loads((src / "SOURCES.json").read_text())[name]["distinct_label_sets"] == d.num_sets
    with np.load(src / f"{name}_labels.npz") as f:
        Y = f["labels"]
    ref = LabelDistribution.from_label_matrix(Y)
    assert d.sets == ref.sets
    np.testing.assert_allclose(d.weights, ref.weights, rtol=0, atol=1e-15)
    np.testing.assert_allclose(d.class_frequencies, Y.mean(0), rtol=0, atol=1e-13)


def test_shipped_tables_stay_small():
    from importlib import resources

    for p in resources.files("mlnc_jax.io.data").iterdir():
        if p.name.endswith((".json", ".json.gz")):
            assert len(p.read_bytes()) <= 2 * 2**20, p.name
