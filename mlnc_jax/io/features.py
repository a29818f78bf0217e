"""Shipped input features of real multi-label data sets (`io/data/features/*.npz`, provenance
in `io/data/features/SOURCES.json`), for training networks on real data."""

from __future__ import annotations

from importlib import resources

import numpy as np

from ..model.errors import InputError

__all__ = ["feature_datasets", "load_features"]

_DATA = "mlnc_jax.io.data"


def feature_datasets() -> list[str]:
    """Names of the shipped feature matrices (`mlnc_jax/io/data/features/*.npz`)."""
    d = resources.files(_DATA).joinpath("features")
    return sorted(p.name[:-4] for p in d.iterdir() if p.name.endswith(".npz"))


def load_features(name: str):
    """`(features float64 [N, F], labels uint8 [N, K], label_names)` of a shipped MULAN set
    (provenance in `mlnc_jax/io/data/features/SOURCES.json`)."""
    if name not in feature_datasets():
        raise InputError(f"no shipped feature matrix {name!r}; available: "
                         f"{', '.join(feature_datasets())}")
    ref = resources.files(_DATA).joinpath("features", f"{name}.npz")
    with ref.open("rb") as fh, np.load(fh) as f:
        return (np.asarray(f["features"], np.float64), np.asarray(f["labels"], np.uint8),
                [str(s) for s in f["label_names"]])


