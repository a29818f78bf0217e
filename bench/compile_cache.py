"""Cold and warm wall times with the persistent compilation cache (`mlnc_jax.engine.compile_cache`).

Each workload runs twice as a fresh process against a fresh, empty cache folder: the first
process compiles and writes the cache, the second reads it. Inside each Python process the
same call runs twice more, so compile time (first call minus second) is reported apart from
run time (second call). Writes `bench/compile_cache.json`.

    python bench/compile_cache.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BATCH = """
import json, time, jax
jax.config.update("jax_enable_x64", True)
import mlnc_jax as mj
dists = [mj.random_correlated(4, s, max_multiplicity=2) for s in range(48)]
cfg = mj.UFMConfig("pal", 4, 5e-3, 5e-3)
t = []
for _ in range(2):
    t0 = time.perf_counter()
    r = mj.solve_batch(dists, cfg, seeds=list(range(48)), progress=False)
    jax.block_until_ready(r.W)
    t.append(time.perf_counter() - t0)
print(json.dumps({"first_call_s": t[0], "second_call_s": t[1],
                  "certified": sum(str(s) == "certified" for s in r.status)}))
"""


def _run(cmd, cache, cwd):
    env = dict(os.environ, JAX_PLATFORMS="cpu", MLNC_CACHE_DIR=str(cache))
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, out.stdout


def _pair(name, cmd, cwd):
    with tempfile.TemporaryDirectory() as cache:
        cold, out_cold = _run(cmd, Path(cache) / "xla", cwd)
        warm, out_warm = _run(cmd, Path(cache) / "xla", cwd)
    row = {"workload": name, "cold_process_s": round(cold, 2), "warm_process_s": round(warm, 2),
           "speedup": round(cold / warm, 2)}
    for tag, text in (("cold", out_cold), ("warm", out_warm)):
        last = text.strip().splitlines()[-1] if text.strip() else ""
        if last.startswith("{"):
            inner = json.loads(last)
            row[f"{tag}_compile_s"] = round(inner["first_call_s"] - inner["second_call_s"], 2)
            row[f"{tag}_run_s"] = round(inner["second_call_s"], 2)
    print(json.dumps(row), flush=True)
    return row


def main():
    import jax

    import mlnc_jax as mj

    rows = []
    with tempfile.TemporaryDirectory() as work:
        mj.random_correlated(4, 0, max_multiplicity=2).save(Path(work) / "d.json")
        cli = [sys.executable, "-m", "mlnc_jax.app.cli"]
        common = ["--labels", "d.json", "--dim", "4", "--lambda-w", "5e-3", "--lambda-h", "5e-3"]
        rows.append(_pair("mlnc-jax solve (K=4, PAL)", cli + ["solve", "--loss", "pal", *common,
                                                          "--no-progress", "--out", "r.npz"],
                          work))
        rows.append(_pair("mlnc-jax compare (K=4)", cli + ["compare", *common, "--figure",
                                                         "c.png"], work))
        rows.append(_pair("solve_batch, 48 problems (K=4, PAL)", [sys.executable, "-c", BATCH],
                          work))
    meta = {"package": mj.__version__, "jax": jax.__version__, "device": str(jax.devices()[0]),
            "cores": os.cpu_count(), "dtype": "float64"}
    (HERE / "compile_cache.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
