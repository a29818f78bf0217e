"""Label distributions (THEORY §1).

A label distribution is a finite support of distinct label sets `S_1..S_T` (multi-hot rows
of a `[T, K]` matrix) with weights `π_s > 0` summing to one. Zero-weight sets are dropped on
construction; padding to a common `T` for batching uses zero weights plus a mask.

`LabelDistribution` is an immutable pytree: `label_sets` and `weights` are leaves, so a stack
of padded distributions can be passed through `jax.vmap`; `num_classes` is static.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import jax
import numpy as np

from .budget import check_memory, estimate_distribution_bytes
from .checks import (
    check_json_object,
    check_label_set,
    check_num_classes,
    check_weights,
    normalise_weights,
)
from .errors import InputError

__all__ = [
    "LabelDistribution",
    "balanced",
    "multiclass",
    "singleton_imbalance",
    "random_correlated",
    "sample_labels",
]


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True, eq=False)
class LabelDistribution:
    """Distinct label sets with normalised weights (THEORY §1).

    Attributes:
      label_sets: multi-hot matrix `[T, K]` (float), one row per label set `y_s`.
      weights: `[T]`, `π_s ≥ 0` summing to one (zero only on padding rows).
      num_classes: `K` (static).
    """

    label_sets: np.ndarray
    weights: np.ndarray
    num_classes: int

    # -- pytree protocol -------------------------------------------------------------
    def tree_flatten(self):
        return (self.label_sets, self.weights), self.num_classes

    @classmethod
    def tree_unflatten(cls, num_classes, children):
        obj = object.__new__(cls)
        object.__setattr__(obj, "label_sets", children[0])
        object.__setattr__(obj, "weights", children[1])
        object.__setattr__(obj, "num_classes", num_classes)
        return obj

    # -- constructors ----------------------------------------------------------------
    @classmethod
    def from_sets(
        cls,
        label_sets: Sequence[Iterable[int]],
        weights: Sequence[float] | np.ndarray,
        num_classes: int,
        *,
        merge_duplicates: bool = False,
    ) -> LabelDistribution:
        """Build from label sets and weights (or counts); rows keep the given order.

        Zero-weight sets are dropped. Duplicate sets are rejected unless
        `merge_duplicates=True`, which adds their weights (first occurrence keeps its row).
        """
        num_classes = check_num_classes(num_classes)
        if isinstance(label_sets, (str, bytes, Mapping)):
            raise InputError(f"label_sets must be a list of label sets, got {label_sets!r}")
        try:
            label_sets = list(label_sets)
        except TypeError:
            raise InputError(f"label_sets must be a list of label sets, got {label_sets!r}") from None
        w = check_weights(weights, len(label_sets))
        if len(label_sets) == 0:
            raise InputError("the label distribution has no label sets")
        # the dense [T, K] matrix below is the large allocation: check it first
        check_memory(estimate_distribution_bytes(len(label_sets), num_classes),
                            f"a distribution with {len(label_sets)} label sets and K = {num_classes}")
        tuples = [check_label_set(s, num_classes, i) for i, s in enumerate(label_sets)]
        w = w / w.max()  # scale first: merging or summing 1e308-sized weights must not overflow
        order: dict[tuple[int, ...], int] = {}
        merged_w: list[float] = []
        for i, (t, wi) in enumerate(zip(tuples, w)):
            if t in order:
                if not merge_duplicates:
                    raise InputError(
                        f"duplicate label set {list(t)} at positions {tuples.index(t)} and {i}"
                        " (merge their weights, or pass merge_duplicates=True)"
                    )
                merged_w[order[t]] += float(wi)
            else:
                order[t] = len(merged_w)
                merged_w.append(float(wi))
        kept = [(t, wi) for t, wi in zip(order.keys(), merged_w) if wi > 0]
        Y = np.zeros((len(kept), num_classes), dtype=np.float64)
        for r, (t, _) in enumerate(kept):
            Y[r, list(t)] = 1.0
        ww = np.array([wi for _, wi in kept], dtype=np.float64)
        return cls(Y, normalise_weights(ww), num_classes)

    @classmethod
    def from_label_matrix(cls, Y) -> LabelDistribution:
        """Binary `[N, K]` label matrix → distinct rows with counts.

        Rows are ordered by multiplicity, then lexicographically by their sorted labels.
        """
        Y = np.asarray(Y)
        if Y.ndim != 2 or Y.shape[0] == 0 or Y.shape[1] == 0:
            raise InputError(f"label matrix must be a non-empty [N, K] array, got shape {Y.shape}")
        if not np.all((Y == 0) | (Y == 1)):
            raise InputError("label matrix must contain only 0 and 1")
        rows, counts = np.unique(Y.astype(np.uint8), axis=0, return_counts=True)
        sets = [tuple(np.flatnonzero(r).tolist()) for r in rows]
        idx = sorted(range(len(sets)), key=lambda i: (len(sets[i]), sets[i]))
        return cls.from_sets([sets[i] for i in idx], counts[idx], Y.shape[1])

    @classmethod
    def from_dict(cls, d: Mapping) -> LabelDistribution:
        """Distribution JSON object → distribution (strict types: see `mlnc_jax.io.schema`)."""
        return parse_distribution(d)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LabelDistribution:
        """Read `{"num_classes": K, "label_sets": [[0], [1, 2], ...], "weights": [...]}`."""
        try:
            with open(path) as f:
                d = json.load(f)
        except FileNotFoundError:
            raise InputError(f"no such file: {path}") from None
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON in {path}: {e.msg} (line {e.lineno})") from None
        except UnicodeDecodeError:
            raise InputError(f"{path} is not a text JSON file") from None
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror or e}") from None
        except (ValueError, RecursionError) as e:  # integer too long, nesting too deep
            raise InputError(f"malformed JSON in {path}: {str(e).splitlines()[0][:120]}") from None
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        return {
            "num_classes": int(self.num_classes),
            "label_sets": self.sets,
            "weights": [float(x) for x in np.asarray(self.weights)],
        }

    def save(self, path: str | os.PathLike) -> None:
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        os.replace(tmp, path)

    # -- views -----------------------------------------------------------------------
    @property
    def num_sets(self) -> int:
        return int(np.shape(self.weights)[-1])

    @property
    def sets(self) -> list[list[int]]:
        """Label sets as sorted lists of labels (padding rows excluded)."""
        Y = np.asarray(self.label_sets)
        w = np.asarray(self.weights)
        return [np.flatnonzero(Y[i] > 0.5).tolist() for i in range(Y.shape[0]) if w[i] > 0]

    @property
    def multiplicities(self) -> np.ndarray:
        """`m_s = |S_s|` for each row."""
        return np.asarray(self.label_sets).sum(-1).round().astype(int)

    @property
    def class_frequencies(self) -> np.ndarray:
        """`p = Σ_s π_s y_s` (THEORY §1)."""
        return np.asarray(self.weights) @ np.asarray(self.label_sets)

    def singleton_index(self) -> dict[int, int]:
        """Map class k → row of the singleton set {k}, for singletons in the support."""
        out = {}
        for i, s in enumerate(self.sets):
            if len(s) == 1:
                out[s[0]] = i
        return out

    def padded(self, num_sets: int) -> LabelDistribution:
        """Append zero-weight empty rows up to `num_sets` rows (for batching)."""
        T = self.num_sets
        if num_sets < T:
            raise InputError(f"cannot pad {T} label sets down to {num_sets}")
        Y = np.zeros((num_sets, self.num_classes))
        Y[:T] = np.asarray(self.label_sets)
        w = np.zeros(num_sets)
        w[:T] = np.asarray(self.weights)
        return LabelDistribution(Y, w, self.num_classes)

    def __repr__(self) -> str:
        return f"LabelDistribution(num_classes={self.num_classes}, num_sets={self.num_sets})"


# -- generators ------------------------------------------------------------------------


def _check_mass(multiplicity_mass: Mapping[int, float], num_classes: int) -> dict[int, float]:
    mm = {int(m): float(v) for m, v in dict(multiplicity_mass).items()}
    for m, v in mm.items():
        if not 0 <= m <= num_classes:
            raise InputError(f"multiplicity {m} outside [0, {num_classes}]")
        if not (np.isfinite(v) and v >= 0):
            raise InputError(f"mass of multiplicity {m} must be a non-negative number, got {v}")
    total = sum(mm.values())
    if total <= 0:
        raise InputError("multiplicity masses are all zero")
    return {m: v / total for m, v in sorted(mm.items()) if v > 0}


def balanced(num_classes: int, multiplicity_mass: Mapping[int, float]) -> LabelDistribution:
    """Within-multiplicity balanced (Li et al. 2024 setting, THEORY §5).

    Every m-subset gets weight `π(m) / C(K, m)`.
    """
    mm = _check_mass(multiplicity_mass, num_classes)
    sets, w = _uniform_subsets(num_classes, mm)
    return LabelDistribution.from_sets(sets, w, num_classes)


def multiclass(counts: Sequence[float] | np.ndarray) -> LabelDistribution:
    """Multi-class data as a label distribution: one singleton `{k}` per class with weight
    `n_k / Σ n` (THEORY §1). On it PAL is softmax cross-entropy (the loss name `"ce"`), so
    the multi-class results of the literature are special cases (README, *Conventions*).

    `counts` are the per-class sample counts `n_k` (or any positive weights), `K = len(counts)`.
    """
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or n.size < 2:
        raise InputError(f"counts must be a list of at least two class counts, got shape {n.shape}")
    bad = np.flatnonzero(~(np.isfinite(n) & (n > 0)))
    if bad.size:
        raise InputError(f"every class needs a positive, finite count: class {bad[0]} has "
                         f"{n[bad[0]]!r}")
    return LabelDistribution.from_sets([(k,) for k in range(n.size)], n / n.sum(), n.size)


def _uniform_subsets(num_classes: int, mm: Mapping[int, float], skip=()):
    """All m-subsets for each multiplicity in `mm` (except `skip`), weight `π(m)/C(K, m)`."""
    sets, w = [], []
    for m, mass in mm.items():
        if m in skip:
            continue
        combos = list(itertools.combinations(range(num_classes), m))
        sets += combos
        w += [mass / len(combos)] * len(combos)
    return sets, w


def singleton_imbalance(
    num_classes: int,
    ratio: float,
    *,
    kind: str = "step",
    multiplicity_mass: Mapping[int, float] = {1: 0.7, 2: 0.3},
    num_major: int | None = None,
) -> LabelDistribution:
    """Imbalanced singletons, balanced higher multiplicities.

    Singletons share mass `π(1)` with weights in ratio max/min = `ratio`:
    `kind="step"`: the first `num_major` classes (default `K//2`) weigh `ratio`, the rest 1;
    `kind="exponential"`: class k weighs `ratio^{-k/(K-1)}` (long tail).
    Every m-subset with `m ≥ 2` gets `π(m)/C(K, m)`.
    """
    if not (np.isfinite(ratio) and ratio >= 1):
        raise InputError(f"imbalance ratio must be >= 1, got {ratio}")
    mm = _check_mass(multiplicity_mass, num_classes)
    if 1 not in mm:
        raise InputError("singleton imbalance needs a positive mass for multiplicity 1")
    K = num_classes
    if kind == "step":
        nm = K // 2 if num_major is None else int(num_major)
        if not 0 <= nm <= K:
            raise InputError(f"num_major must be in [0, {K}], got {nm}")
        s = np.where(np.arange(K) < nm, float(ratio), 1.0)
    elif kind == "exponential":
        s = float(ratio) ** (-np.arange(K) / max(K - 1, 1))
    else:
        raise InputError(f"unknown imbalance kind {kind!r} (use 'step' or 'exponential')")
    higher, w_higher = _uniform_subsets(K, mm, skip=(1,))
    sets = [(k,) for k in range(K)] + higher
    w = list(mm[1] * s / s.sum()) + w_higher
    return LabelDistribution.from_sets(sets, w, K)


def random_correlated(
    num_classes: int,
    seed: int,
    *,
    max_multiplicity: int = 2,
    concentration: float = 1.0,
    correlation: float = 1.0,
) -> LabelDistribution:
    """Random distribution over all non-empty sets of size ≤ `max_multiplicity` (seeded).

    Weights: `π_S ∝ g_S · exp(correlation · Σ_{i<j∈S} c_ij)` with `g_S ~ Gamma(concentration)`
    and a random symmetric affinity `c_ij ~ N(0, 1)`, so class pairs co-occur unevenly.
    Every singleton is in the support, so the synthesis rules of THEORY §4 apply.
    """
    K = int(num_classes)
    if not 1 <= max_multiplicity <= K:
        raise InputError(f"max_multiplicity must be in [1, {K}], got {max_multiplicity}")
    if not concentration > 0:
        raise InputError(f"concentration must be > 0, got {concentration}")
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(K, K))
    c = (c + c.T) / math.sqrt(2)
    sets, w = [], []
    for m in range(1, max_multiplicity + 1):
        for S in itertools.combinations(range(K), m):
            aff = sum(c[i, j] for i, j in itertools.combinations(S, 2))
            sets.append(S)
            w.append(np.exp(correlation * aff))
    g = rng.gamma(concentration, size=len(w))
    w = np.asarray(w) * np.maximum(g, 1e-12)
    return LabelDistribution.from_sets(sets, w, K)


def sample_labels(dist: LabelDistribution, num_samples: int, seed: int = 0):
    """Draw `N` per-sample labels i.i.d. from `dist`.

    Returns `(Y, set_index)`: `Y` uint8 `[N, K]`, `set_index` int `[N]` (row of `dist`).
    """
    if num_samples < 1:
        raise InputError(f"num_samples must be >= 1, got {num_samples}")
    rng = np.random.default_rng(seed)
    w = np.asarray(dist.weights, dtype=np.float64)
    idx = rng.choice(w.shape[0], size=int(num_samples), p=w / w.sum())
    Y = np.asarray(dist.label_sets)[idx].round().astype(np.uint8)
    return Y, idx
_DIST_KEYS = ("num_classes", "label_sets", "weights")


def parse_distribution(obj) -> LabelDistribution:
    """Distribution JSON `{"num_classes": K, "label_sets": [[...], ...], "weights": [...]}`
    → `LabelDistribution`. Other keys (name, class_names, provenance, description) are
    ignored. Strict about JSON types; the numbers then go through `from_sets`."""
    check_json_object(obj, "a label distribution")
    missing = [k for k in _DIST_KEYS if k not in obj]
    if missing:
        raise InputError(f"label distribution JSON lacks key(s): {', '.join(missing)}")
    K = check_num_classes(obj["num_classes"])
    sets, weights = obj["label_sets"], obj["weights"]
    if not isinstance(sets, list):
        raise InputError(f"'label_sets' must be a JSON list, got {type(sets).__name__}")
    if not isinstance(weights, list):
        raise InputError(f"'weights' must be a JSON list, got {type(weights).__name__}")
    for i, s in enumerate(sets):
        if not isinstance(s, list):
            raise InputError(f"label set #{i} must be a list of integers, got {s!r}")
    return LabelDistribution.from_sets(sets, weights, K)


