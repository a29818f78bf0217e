"""Shared fixtures for the mlnc_jax test-suite.

All numerical checks run in float64 (THEORY tolerances of 1e-7 / 1e-10 are float64 ones).
JIT compilation dominates the runtime, so solves are memoised for the whole session:
tests that need the same `(distribution, config)` share one solve.
"""

from __future__ import annotations

import os
from pathlib import Path

# Before JAX starts its backend (and inherited by the subprocesses tests start): the test
# problems are tiny, so XLA compilation is most of their time, and LLVM's optimisation
# passes are most of that while buying nothing at these sizes (IEEE arithmetic either way).
# About 20 % off the suite. Tests that set XLA_FLAGS themselves keep their own.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

# Timing-sensitive tests (kill a sweep mid-run) must not find programs compiled by an
# earlier run on disk: the suite compiles afresh; tests of the cache name their own folder.
os.environ["MLNC_CACHE_DIR"] = "off"

import jax  # noqa: E402
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


def real_labels_dir() -> Path | None:
    """`shared/data/real-labels`, next to the checkout or inside it; None if absent."""
    here = Path(__file__).resolve()
    for base in (here.parents[2] / "shared", here.parents[1] / "shared"):
        d = base / "data" / "real-labels"
        if d.is_dir():
            return d
    return None


# Label distributions with K = 6 are padded (zero-weight rows) to this many rows so that
# they share one compiled solver per (loss, dim, bias): the real `emotions` label matrix has
# 27 distinct sets, the random and imbalanced K = 6 distributions of the tests have 21.
K6_ROWS = 27


class _SolveCache:
    """Memoise `mlnc_jax.solve` on the distribution's arrays, the config and the options."""

    def __init__(self):
        self._store = {}

    def __call__(self, dist, config, **kwargs):
        from mlnc_jax import solve

        key = (np.asarray(dist.label_sets).tobytes(), np.asarray(dist.weights).tobytes(),
               np.shape(dist.label_sets), dist.num_classes, tuple(config),
               tuple(sorted(kwargs.items())))
        if key not in self._store:
            self._store[key] = solve(dist, config, **kwargs)
        return self._store[key]


@pytest.fixture(scope="session")
def solve_cached():
    return _SolveCache()


@pytest.fixture(scope="session")
def real_dir():
    d = real_labels_dir()
    if d is None:
        pytest.skip("shared/data/real-labels not found")
    return d
