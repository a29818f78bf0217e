"""Shipped real label tables: faithful to the label matrices they were derived from."""

from pathlib import Path

import numpy as np
import pytest

from mlnc_jax import LabelDistribution
from mlnc_jax.real_labels import available, load_real, real_metadata

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
