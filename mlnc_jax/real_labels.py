"""Real multi-label label distributions shipped with the package.

Label-set count tables derived from public label matrices (MULAN benchmarks emotions, scene,
yeast, birds, genbase, medical, enron; PASCAL VOC 2007 trainval/test). Each table records
its provenance (origin, N, L, cardinality, imbalance ratio). Only label sets and counts are
shipped: no features, no images.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import InputError
from .labels import LabelDistribution

__all__ = ["available", "load_real", "real_metadata", "load_labels"]


def available() -> list[str]:
    """Names of the shipped tables."""
    return sorted(p.name[:-5] for p in resources.files("mlnc_jax.data").iterdir()
                  if p.name.endswith(".json"))


def _raw(name: str) -> dict:
    if name not in available():
        raise InputError(f"no shipped label table {name!r}; available: {', '.join(available())}")
    return json.loads(resources.files("mlnc_jax.data").joinpath(f"{name}.json").read_text())


def load_real(name: str) -> LabelDistribution:
    """The empirical label distribution of a shipped data set (weights = counts / N)."""
    return LabelDistribution.from_dict(_raw(name))


def real_metadata(name: str) -> dict:
    """Class names and provenance of a shipped table."""
    d = _raw(name)
    return {"name": d["name"], "num_classes": d["num_classes"], "class_names": d["class_names"],
            "num_samples": int(sum(d["weights"])), "num_sets": len(d["label_sets"]),
            "provenance": d["provenance"]}


def load_labels(spec, base=None) -> LabelDistribution:
    """Resolve a label source: a distribution JSON, a binary `[N, K]` label matrix (`.npy`),
    or the name of a shipped table (`voc2007_trainval`, ...). Relative paths are taken
    against `base` when given."""
    spec = str(spec)
    path = Path(spec)
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    if not path.exists() and spec in available():
        return load_real(spec)
    if path.suffix == ".npy":
        try:
            Y = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise InputError(f"no such file: {spec}") from None
        except (ValueError, OSError) as e:
            raise InputError(f"cannot read {spec} as a .npy label matrix: {e}") from None
        return LabelDistribution.from_label_matrix(Y)
    return LabelDistribution.load(path)
