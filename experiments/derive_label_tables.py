"""Derive the label-set count tables shipped in `mlnc_jax/data/` from real label matrices.

    python experiments/derive_label_tables.py --source ../shared/data/real-labels

Each table is `{"name", "num_classes", "class_names", "label_sets", "weights" (integer
counts), "provenance"}`, readable by `LabelDistribution.load`. The provenance copies the
source entry (origin, N, L, cardinality, ...) of `SOURCES.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

NAMES = ["emotions", "scene", "yeast", "birds", "genbase", "medical", "enron",
         "voc2007_trainval", "voc2007_test"]


def table(source: Path, name: str, sources: dict) -> dict:
    Y = np.load(source / f"{name}_labels.npy")
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
        "provenance": {"derived_from": f"{name}_labels.npy", **sources.get(name, {})},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "real-labels"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "mlnc_jax" / "data"))
    args = ap.parse_args(argv)
    source, out = Path(args.source), Path(args.out)
    if not (source / "SOURCES.json").exists():
        print(f"derive_label_tables: no SOURCES.json in {source}", file=sys.stderr)
        return 2
    sources = json.loads((source / "SOURCES.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        t = table(source, name, sources)
        (out / f"{name}.json").write_text(json.dumps(t, separators=(",", ":")) + "\n")
        print(f"{name}: K={t['num_classes']}, {len(t['label_sets'])} label sets, N={sum(t['weights'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
