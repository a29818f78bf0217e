"""`mlnc-jax measure` on a large feature file: time and peak memory against N and d.

A synthetic network is written to disk in blocks (features `[N, d]` float16 or float32:
label-set prototypes plus noise, labels drawn from `random_correlated(K, 0)`, a random
classifier), then measured by the command line in a fresh process at given λ's (the fit is
a function of the `[T, d]` means, not of N). Reported per size: file size, wall time of
the CLI (compilation included, the persistent cache off) and its peak resident memory
(`VmHWM` of the child), and the time the two streamed passes take inside it.

    python bench/measure_large.py [--sizes 100000x512 1000000x4096] [--dtype float16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def write_network(folder: Path, N: int, d: int, K: int, dtype: str, seed: int = 0) -> dict:
    import mlnc_jax as mj

    rng = np.random.default_rng(seed)
    dist = mj.random_correlated(K, 0)
    Y, idx = mj.sample_labels(dist, N, seed=seed)
    protos = rng.normal(size=(dist.num_sets, d)).astype(np.float32)
    H = np.lib.format.open_memmap(folder / "H.npy", mode="w+", dtype=dtype, shape=(N, d))
    step = max(1, (256 << 20) // (4 * d))
    for i in range(0, N, step):
        j = min(i + step, N)
        H[i:j] = protos[idx[i:j]] + 0.1 * rng.standard_normal((j - i, d), dtype=np.float32)
    H.flush()
    del H
    np.save(folder / "Y.npy", np.asarray(Y, np.uint8))
    np.save(folder / "W.npy", rng.normal(size=(K, d)) / np.sqrt(d))
    np.save(folder / "b.npy", np.zeros(K))
    return {"num_sets": int(dist.num_sets), "file_bytes": (folder / "H.npy").stat().st_size}


def run_cli(folder: Path, loss: str) -> dict:
    argv = ["--features", str(folder / "H.npy"), "--labels", str(folder / "Y.npy"),
            "--classifier", str(folder / "W.npy"), "--bias", str(folder / "b.npy"),
            "--loss", loss, "--lambda-w", "5e-3", "--lambda-h", "5e-3",
            "--out", str(folder / "report.json"), "--compile-cache", "off"]
    # peak memory of the measuring process itself: VmHWM of its own address space (ru_maxrss
    # of a child is not usable, Linux carries the parent's high-water mark into it)
    code = ("import sys; from mlnc_jax.app.cli import main; rc = main(sys.argv[1:]); "
            "print('VmHWM', [l.split()[1] for l in open('/proc/self/status') "
            "if l.startswith('VmHWM')][0]); sys.exit(rc)")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, "measure", *argv], capture_output=True,
                         text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    rep = json.loads((folder / "report.json").read_text())
    peak = int(out.stdout.split("VmHWM")[-1].split()[0].strip("[]'\"")) * 1024
    return {"wall_s": wall, "peak_rss_bytes": peak, "measure_s": rep["metadata"]["wall_time_s"],
            "certified": rep["ufm"]["certified"], "within_ratio": rep["comparison"]["within_ratio"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["100000x512", "1000000x512", "1000000x4096"])
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--loss", default="bce")
    ap.add_argument("--out", default=str(HERE / "measure_large.json"))
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        N, d = (int(x) for x in size.split("x"))
        with tempfile.TemporaryDirectory(dir=os.environ.get("MLNC_BENCH_TMP")) as tmp:
            t = time.perf_counter()
            info = write_network(Path(tmp), N, d, args.classes, args.dtype)
            info["write_s"] = time.perf_counter() - t
            info.update(run_cli(Path(tmp), args.loss))
        row = {"N": N, "d": d, "K": args.classes, "dtype": args.dtype, "loss": args.loss, **info}
        print(json.dumps(row), flush=True)
        rows.append(row)
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    Path(args.out).write_text(json.dumps({"metadata": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
