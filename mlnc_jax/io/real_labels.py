"""Real multi-label label distributions shipped with the package.

Label-set count tables derived from public label matrices (MULAN benchmarks emotions, scene,
yeast, birds, genbase, medical, enron, bibtex, delicious; PASCAL VOC 2007 trainval/test). Each table records
its provenance (origin, N, L, cardinality, imbalance ratio). Only label sets and counts are
shipped: no features, no images.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

from ..model.errors import InputError
from ..model.labels import LabelDistribution
from .schema import load_label_matrix_file

__all__ = ["available", "load_real", "real_metadata", "load_labels"]


_SUFFIXES = (".json", ".json.gz")  # large tables (delicious) are stored gzip-compressed


def _table_files() -> dict[str, str]:
    out = {}
    for p in resources.files("mlnc_jax.io.data").iterdir():
        for suffix in _SUFFIXES:
            if p.name.endswith(suffix):
                out[p.name[: -len(suffix)]] = p.name
    return out


def available() -> list[str]:
    """Names of the shipped tables."""
    return sorted(_table_files())


def _raw(name: str) -> dict:
    files = _table_files()
    if name not in files:
        raise InputError(f"no shipped label table {name!r}; available: {', '.join(sorted(files))}")
    data = resources.files("mlnc_jax.io.data").joinpath(files[name]).read_bytes()
    if files[name].endswith(".gz"):
        data = gzip.decompress(data)
    return json.loads(data.decode())


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
    """Resolve a label source: a distribution JSON, a binary `[N, K]` label matrix (`.npy`,
    or `.npz` with the array `labels`), or the name of a shipped table (`voc2007_trainval`,
    ...). Relative paths are taken against `base` when given."""
    if not isinstance(spec, (str, Path)):
        raise InputError(f"a label source must be a file name or a table name, got {spec!r}")
    spec = str(spec)
    if not spec or "\x00" in spec:
        raise InputError(f"invalid label source {spec!r}")
    path = Path(spec)
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    if not path.exists() and spec in available():
        return load_real(spec)
    if path.suffix in (".npy", ".npz"):
        return load_label_matrix_file(path)
    return LabelDistribution.load(path)
