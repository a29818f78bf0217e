"""Steps and time against λ as regularization vanishes (THEORY §2c).

`multiclass([10, 10, 1, 1])` (the imbalanced four-class problem of the SELI literature) and
the multi-label `random_correlated(5, 1)`, d = K, λ_W = λ_H = λ from 1e-2 to 1e-8, for CE
(PAL on singletons), BCE and MSE, with and without bias. Each solve runs twice in this
process: the first call's extra time is compilation (reported apart), the second is the run
time. Ratios are against λ = 1e-2 of the same loss and bias. The same λ's are then solved
by `solve_path` (continuation, each from the previous optimum). Writes
`bench/vanishing_regularization.json`.

    python bench/vanishing_regularization.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax

import mlnc_jax as mj

jax.config.update("jax_enable_x64", True)
LAMBDAS = [10.0 ** -e for e in range(2, 9)]
PROBLEMS = {"multiclass(10,10,1,1)": lambda: mj.multiclass([10, 10, 1, 1]),
            "random_correlated(5,1)": lambda: mj.random_correlated(5, 1)}


def _timed(dist, cfg):
    t0 = time.perf_counter()
    r = mj.solve(dist, cfg, warn=False)
    return r, time.perf_counter() - t0


def run_case(name, loss, bias):
    dist = PROBLEMS[name]()
    rows = []
    for lam in LAMBDAS:
        cfg = mj.UFMConfig(loss, dist.num_classes, lam, lam, bias=bias)
        _, first = _timed(dist, cfg)
        r, run = _timed(dist, cfg)
        rows.append({"lambda": lam, "status": str(r.status), "steps": int(r.steps),
                     "hessian_products": int(r.hessian_products), "run_s": run,
                     "compile_s": max(first - run, 0.0), "residual": float(r.residual)})
    base = rows[0]
    for row in rows:
        row["steps_ratio"] = row["steps"] / base["steps"]
        row["run_ratio"] = row["run_s"] / base["run_s"]
    return {"problem": name, "loss": loss, "bias": bias, "rows": rows}


def run_path(name, loss, bias):
    """The same λ's by `solve_path` (continuation from the previous optimum), timed warm."""
    dist = PROBLEMS[name]()
    cfg = mj.UFMConfig(loss, dist.num_classes, 1.0, 1.0, bias=bias)
    mj.solve_path(dist, cfg, LAMBDAS, warn=False)
    t0 = time.perf_counter()
    path = mj.solve_path(dist, cfg, LAMBDAS, warn=False)
    return {"problem": name, "loss": loss, "bias": bias, "path_run_s": time.perf_counter() - t0,
            "rows": [{"lambda": lam, "status": str(r.status), "steps": int(r.steps)}
                     for lam, r in zip(LAMBDAS, path)]}


def main():
    out = {"jax": jax.__version__, "package": mj.__version__, "device": str(jax.devices()[0]),
           "dtype": "float64", "cases": []}
    for name in PROBLEMS:
        for loss in ("ce", "bce", "mse"):
            for bias in (False, True):
                case = run_case(name, loss, bias)
                out["cases"].append(case)
                print(name, loss, "bias" if bias else "no bias",
                      " ".join(f"{r['lambda']:.0e}:{r['status'][:4]}/{r['steps']}/{r['run_s']:.2f}s"
                               for r in case["rows"]), flush=True)
                path = run_path(name, loss, bias)
                out.setdefault("paths", []).append(path)
                print("  solve_path", " ".join(f"{r['lambda']:.0e}:{r['status'][:4]}/{r['steps']}"
                                               for r in path["rows"]),
                      f"total {path['path_run_s']:.2f}s", flush=True)
    path = Path(__file__).resolve().parent / "vanishing_regularization.json"
    path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
