"""A sweep on one process against the same sweep shared by two `jax.distributed` processes
(gloo, on this machine), both cold: the persistent compile cache off, fresh processes.

Sweep: `random_correlated(6, s)` for 96 seeds × PAL and MSE = 192 problems, chunk size 8
(24 chunks). Timed: the wall of the whole command (process start, JAX start-up, the
distributed handshake, compilation, solves, writes) until every process has exited.
Communication, counted: per process one coordinator connection, two barriers (after the
manifest and at the end); no device collective and no per-chunk message.

    python bench/sweep_processes.py [--seeds 96] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _config(seeds: int, classes: int) -> dict:
    return {"distributions": [{"generator": "random_correlated", "num_classes": classes,
                               "seed": {"range": [0, seeds]}}],
            "losses": ["pal", "mse"], "dim": classes, "lambda_w": 5e-3, "lambda_h": 5e-3,
            "chunk_size": 8}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cfg: Path, out: Path, processes: int) -> float:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MLNC_CACHE_DIR": "off"}
    base = [sys.executable, "-m", "mlnc_jax.app.cli", "sweep", "--config", str(cfg), "--out",
            str(out), "--no-progress"]
    extra = [[]] if processes == 1 else [
        ["--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes",
         str(processes), "--process-id", str(i)] for port in [_port()] for i in range(processes)]
    t = time.perf_counter()
    ps = [subprocess.Popen(base + e, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True) for e in extra]
    for p in ps:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(err[-2000:])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=96)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "sweep_processes.json"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "sweep.json"
        cfg.write_text(json.dumps(_config(args.seeds, args.classes)))
        for r in range(args.repeats):          # alternate, so drift hits both alike
            for n in (1, 2):
                wall = _run(cfg, Path(tmp) / f"out-{n}-{r}", n)
                rows.append({"processes": n, "repeat": r, "wall_s": wall})
                print(json.dumps(rows[-1]), flush=True)
    one = min(x["wall_s"] for x in rows if x["processes"] == 1)
    two = min(x["wall_s"] for x in rows if x["processes"] == 2)
    res = {"metadata": {"machine": platform.platform(), "cpus": os.cpu_count(),
                        "problems": 2 * args.seeds, "chunks": 2 * args.seeds // 8,
                        "num_classes": args.classes},
           "rows": rows, "best_one_process_s": one, "best_two_processes_s": two,
           "ratio_two_over_one": two / one}
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}))
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
