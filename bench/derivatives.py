"""Derivatives at scale: `jax.grad` of `‖W‖²` in `λ_H` through `solve` against the plain
solve, each in a cold process (own compilation, no persistent cache), wall time and peak
memory (`ru_maxrss` of the child). PAL, `random_correlated(K, 2, max_multiplicity=2)`,
`d = K`. Writes `bench/derivatives.json`.

    python bench/derivatives.py [K ...] [--method matrix_free|exact|auto]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import sys, time, json, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import mlnc_jax as mj
K, mode, method = int(sys.argv[1]), sys.argv[2], sys.argv[3]
d = mj.random_correlated(K, 2, max_multiplicity=2)
cfg = mj.UFMConfig("pal", K, 5e-3, 5e-3)
t0 = time.perf_counter()
if mode == "solve":
    r = mj.solve(d, cfg, method=method)
    out = float((r.W ** 2).sum()); ok = bool(r.certified)
else:
    f = lambda lh: jnp.sum(mj.solve(d, cfg._replace(lambda_h=lh), method=method).W ** 2)
    out = float(jax.grad(f)(jnp.asarray(5e-3))); ok = bool(jnp.isfinite(out))
print(json.dumps({"T": d.num_sets, "value": out, "ok": ok, "seconds": time.perf_counter() - t0}))
"""


def _child(K, mode, method):
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
               MLNC_CACHE_DIR="off")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(K), mode, method], env=env,
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    row = json.loads(out.stdout.strip().splitlines()[-1])
    # ru_maxrss of children is the largest child so far: run the smaller (solve) first
    row.update(K=K, mode=mode, method=method, wall_s=round(wall, 2),
               peak_rss_mb=round(max(peak, before) / 1024, 1))
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("K", nargs="*", type=int, default=[100])
    ap.add_argument("--method", default="matrix_free")
    args = ap.parse_args()
    import jax

    import mlnc_jax as mj

    rows = []
    for K in args.K:
        s = _child(K, "solve", args.method)
        g = _child(K, "grad", args.method)
        g.update(time_ratio=round(g["wall_s"] / s["wall_s"], 2),
                 memory_ratio=round(g["peak_rss_mb"] / s["peak_rss_mb"], 2))
        for r in (s, g):
            print(json.dumps(r), flush=True)
        rows += [s, g]
    meta = {"package": mj.__version__, "jax": jax.__version__, "device": str(jax.devices()[0]),
            "cores": os.cpu_count(), "dtype": "float64"}
    (HERE / "derivatives.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
