"""One certified solve on a shipped label space (default delicious: K = 983, T = 15,806
label sets), d = K, λ_W = λ_H = 5e-3, tol 1e-10, `method="auto"` (matrix-free there) or
the path named;
prints one JSON line: status, wall time and the result's `seconds`, Newton steps, CG
iterations (the result's `hessian_products`), the
peak resident memory (VmHWM) and, on an accelerator, its peak memory, with the run's
metadata.

Usage: python bench/delicious_run.py LOSS [random|mse] [LABELS] [auto|exact|matrix_free]"""

import json
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import mlnc_jax as mj  # noqa: E402
from mlnc_jax.io.results import run_metadata


def peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def device_peak_gb() -> float:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", float("nan")) / 2**30


def main(loss: str, init: str = "random", name: str = "delicious", method: str = "auto") -> dict:
    dist = mj.load_real(name)
    K = dist.num_classes
    t0 = time.perf_counter()
    r = mj.solve(dist, mj.UFMConfig(loss, K, 5e-3, 5e-3), tol=1e-10, progress=True,
                 init=None if init == "random" else init, method=method)
    wall = time.perf_counter() - t0
    rec = {"labels": name, "loss": loss, "K": K, "T": dist.num_sets, "dim": K,
           "init": init, "method": method, "status": str(r.status), "residual": float(r.residual),
           "certificate": float(r.certificate), "steps": int(r.steps),
           "cg_iterations": int(r.hessian_products), "wall_s": wall, "seconds": float(r.seconds),
           "peak_rss_gb": peak_rss_gb(), "device_peak_gb": device_peak_gb(),
           "meta": run_metadata(command="bench/delicious_run.py")}
    print(json.dumps(rec))
    return rec


if __name__ == "__main__":
    main(*sys.argv[1:])
