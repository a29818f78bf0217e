"""Derive the label-set count tables shipped in `mlnc_jax/io/data/` from real label matrices.

    python experiments/derive_label_tables.py --source ../shared/data/real-labels

Each table is `{"name", "num_classes", "class_names", "label_sets", "weights" (integer
counts), "provenance"}`, readable by `LabelDistribution.load`. The provenance copies the
source entry (origin, N, L, cardinality, ...) of `SOURCES.json`. Sources are `NAME_labels.npy`
or `NAME_labels.npz` (array `labels`). A table whose JSON exceeds `GZIP_ABOVE` bytes is
stored gzip-compressed as `NAME.json.gz` (deterministic: no timestamp in the header).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np

NAMES = ["emotions", "scene", "yeast", "birds", "genbase", "medical", "enron",
         "voc2007_trainval", "voc2007_test", "bibtex", "delicious"]
GZIP_ABOVE = 1_000_000  # bytes of JSON; the package ships nothing above 2 MB


def label_matrix(source: Path, name: str) -> tuple[np.ndarray, str]:
    npy, npz = source / f"{name}_labels.npy", source / f"{name}_labels.npz"
    if npy.exists():
        return np.load(npy, allow_pickle=False), npy.name
    with np.load(npz, allow_pickle=False) as f:
        return f["labels"], npz.name


def table(source: Path, name: str, sources: dict) -> dict:
    Y, file_name = label_matrix(source, name)
    class_names = json.loads((source / f"{name}_names.json").read_text())
    rows, counts = np.unique(Y.astype(np.uint8), axis=0, return_counts=True)
    sets = [np.flatnonzero(r).tolist() for r in rows]
    order = sorted(range(len(sets)), key=lambda i: (len(sets[i]), sets[i]))
    return {
        "name": name,
        "num_classes": int(Y.shape[1]),
        "class_names": class_names,
        "label_sets": [sets[i] for i in order],
        "weights": [int(counts[i]) for i in order],
        "provenance": {"derived_from": file_name, **sources.get(name, {})},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "real-labels"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "mlnc_jax" / "io" / "data"))
    args = ap.parse_args(argv)
    source, out = Path(args.source), Path(args.out)
    if not (source / "SOURCES.json").exists():
        print(f"derive_label_tables: no SOURCES.json in {source}", file=sys.stderr)
        return 2
    sources = json.loads((source / "SOURCES.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        t = table(source, name, sources)
        text = (json.dumps(t, separators=(",", ":")) + "\n").encode()
        if len(text) > GZIP_ABOVE:
            (out / f"{name}.json.gz").write_bytes(gzip.compress(text, 9, mtime=0))
        else:
            (out / f"{name}.json").write_bytes(text)
        print(f"{name}: K={t['num_classes']}, {len(t['label_sets'])} label sets, N={sum(t['weights'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
