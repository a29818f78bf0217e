"""`jax.grad` of `‖W‖²` in `λ_H` at bibtex's certified PAL optimum (K = 159) on the
matrix-free path, against the plain solve, in one process after a warm-up-free start:
wall times and peak RSS. Appends to `bench/derivatives.json` rows.

    python bench/derivatives_bibtex.py
"""

import json
import resource
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)
import mlnc_jax as mj  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else "grad"
d = mj.load_real("bibtex")
cfg = mj.UFMConfig("pal", d.num_classes, 5e-3, 5e-3)
t0 = time.perf_counter()
if mode == "solve":
    r = mj.solve(d, cfg, method="matrix_free")
    val, ok = float((r.W ** 2).sum()), bool(r.certified)
else:
    f = lambda lh: jnp.sum(mj.solve(d, cfg._replace(lambda_h=lh), method="matrix_free").W ** 2)
    val = float(jax.grad(f)(jnp.asarray(5e-3)))
    ok = bool(jnp.isfinite(val))
row = {"dataset": "bibtex", "K": d.num_classes, "T": d.num_sets, "mode": mode, "ok": ok,
       "value": val, "wall_s": round(time.perf_counter() - t0, 2),
       "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
print(json.dumps(row))
out = Path(__file__).resolve().parent / "derivatives_bibtex.jsonl"
with out.open("a") as fh:
    fh.write(json.dumps(row) + "\n")
