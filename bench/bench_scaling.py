"""Benchmark: time per certified solve against K and T, for both engine paths.

Label spaces are cut from the shipped delicious table (K = 983, 16,105 documents), so they
are real co-occurrence patterns at every size:

* K sweep: the K most frequent classes, every document (T = distinct restricted sets);
* T sweep: K = 40 most frequent classes, the first N documents of a fixed shuffle.

Each point: BCE, d = K, λ_W = λ_H = 5e-3, tol 1e-10, float64, `init="mse"`, one process.
Reported per path: wall time of the certified solve after a compile run on the same shape
(compile time apart), Newton steps, CG iterations (Hessian products), the flop estimate
`newton.step_flops` summed over the run, and the achieved GFLOP/s; plus the path `auto`
picks. The exact path is skipped where its per-set factors exceed `--exact-max-gb` (4);
from `--warm-max-k` (200) on, a point is one run with its compile time included (seconds
against minutes). Results are written after every point.

Usage: python bench/bench_scaling.py [--quick] [--ks K ...] [--ns N ...] [--out bench/scaling.json]
       python bench/bench_scaling.py --plot bench/scaling.json [bench/scaling_h100.json]
                                     (figures/scaling.png; one series per file and path)
       python bench/bench_scaling.py --table bench/scaling.json   (Markdown, as in RESULTS.md)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402


def _documents(name="delicious", seed=0):
    """The table's documents as label lists, in a fixed shuffled order."""
    from mlnc_jax.io.real_labels import _raw

    raw = _raw(name)
    docs = [s for s, c in zip(raw["label_sets"], raw["weights"]) for _ in range(int(c))]
    order = np.random.default_rng(seed).permutation(len(docs))
    return [docs[i] for i in order], raw["num_classes"]


def _restrict(docs, K_all, K):
    """Distribution over the K most frequent classes (documents left with no label drop out)."""
    from mlnc_jax.model.labels import LabelDistribution

    freq = np.zeros(K_all)
    for s in docs:
        freq[list(s)] += 1
    top = np.argsort(-freq, kind="stable")[:K]
    where = {int(c): i for i, c in enumerate(top)}
    counts: dict = {}
    for s in docs:
        t = tuple(sorted(where[c] for c in s if c in where))
        if t:
            counts[t] = counts.get(t, 0) + 1
    sets = list(counts)
    Y = np.zeros((len(sets), K))
    for i, t in enumerate(sets):
        Y[i, list(t)] = 1.0
    w = np.array([counts[t] for t in sets], float)
    return LabelDistribution(Y, w / w.sum(), K)


def _solve(dist, method):
    import mlnc_jax as mj

    K = dist.num_classes
    t = time.perf_counter()
    r = mj.solve(dist, mj.UFMConfig("bce", K, 5e-3, 5e-3), tol=1e-10, init="mse",
                 method=method, warn=False)
    return r, time.perf_counter() - t


def _point(dist, method, repeat, warm: bool):
    from mlnc_jax.engine.newton import step_flops
    from mlnc_jax.engine.placement import bucket_rows

    K, T = dist.num_classes, dist.num_sets
    if warm:
        _, first = _solve(dist, method)           # compiles this shape
        runs = [_solve(dist, method) for _ in range(repeat)]
    else:  # one run, compile included (seconds against minutes of solving)
        runs = [_solve(dist, method)]
        first = float("nan")
    r, wall = min(runs, key=lambda x: x[1])
    Tp = bucket_rows(T)
    per_step, per_cg = step_flops(Tp, K, K, method, 0), step_flops(Tp, K, K, method, 1)
    flops = int(r.steps) * per_step + int(r.hessian_products) * (per_cg - per_step)
    return {"K": K, "T": T, "method": method, "status": str(r.status), "steps": int(r.steps),
            "cg_iterations": int(r.hessian_products), "seconds": wall,
            "compile_s": max(first - wall, 0.0) if warm else None, "gflop": flops / 1e9,
            "gflops_per_s": flops / 1e9 / wall}


def run(quick: bool, out: str, repeat: int, Ks=None, Ns=None, exact_max_gb: float = 4.0,
        warm_max_k: int = 200):
    import jax

    jax.config.update("jax_enable_x64", True)
    from mlnc_jax.engine.newton import choose_method
    from mlnc_jax.engine.placement import bucket_rows
    from mlnc_jax.io import schema
    from mlnc_jax.io.results import run_metadata, write_json_atomic

    docs, K_all = _documents()
    Ks = Ks if Ks is not None else [10, 20, 40] if quick else [10, 20, 40, 80, 160, 320]
    Ns = Ns if Ns is not None else [200, 1000] if quick else [100, 400, 1600, 6400, 16105]
    cases = [("K", _restrict(docs, K_all, K)) for K in Ks]
    cases += [("T", _restrict(docs[:n], K_all, 40)) for n in Ns]
    rows = []
    for sweep, dist in cases:
        K, Tp = dist.num_classes, bucket_rows(dist.num_sets)
        auto = choose_method(Tp, K, K)
        for method in ("exact", "matrix_free"):
            if method == "exact" and \
                    schema.estimate_solve_bytes(K, Tp, K, 1, "exact") > exact_max_gb * 1e9:
                continue
            row = {"sweep": sweep, "auto": auto, **_point(dist, method, repeat, K < warm_max_k)}
            print(json.dumps(row), flush=True)
            rows.append(row)
        write_json_atomic(out, {"rows": rows, "meta": run_metadata(  # after every point
            command="bench/bench_scaling.py", quick=quick, repeat=repeat, loss="bce",
            lambda_w=5e-3, lambda_h=5e-3, tol=1e-10, init="mse", warm_max_k=warm_max_k,
            exact_max_gb=exact_max_gb)})


def table(path: str) -> str:
    """The result file as the Markdown table of bench/RESULTS.md."""
    rows = json.load(open(path))["rows"]
    out = ["| sweep | K | T | path | steps | products | seconds | compile s | GFLOP | GFLOP/s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = "included" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        out.append(f"| {r['sweep']} | {r['K']} | {r['T']:,} | {r['method'].replace('_', '-')} | "
                   f"{r['steps']} | {r['cg_iterations']:,} | {r['seconds']:.2f} | {c} | "
                   f"{r['gflop']:,.1f} | {r['gflops_per_s']:,.1f} |")
    return "\n".join(out)


def _device_label(meta) -> str:
    dev = str(meta.get("device", "?"))
    return "2-core CPU" if dev.startswith("cpu") else dev.split(":", 1)[-1].replace("NVIDIA ", "")


def plot(paths, png: str):
    """One figure from one or more result files (one per device), plotted from the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for n, path in enumerate(paths):
        data = json.load(open(path))
        rows, dev = data["rows"], _device_label(data["meta"])
        for ax, sweep in ((axes[0], "K"), (axes[1], "T")):
            for method, style in (("exact", "o-"), ("matrix_free", "s--")):
                pts = sorted((r[sweep], r["seconds"], r["gflops_per_s"]) for r in rows
                             if r["sweep"] == sweep and r["method"] == method)
                if not pts:
                    continue
                x, y, g = zip(*pts)
                ax.loglog(x, y, style, color=f"C{2 * n + (method == 'exact')}",
                          label=f"{method.replace('_', '-')}, {dev}")
                for xi, yi, gi in pts:
                    ax.annotate(f"{gi:.0f}", (xi, yi), textcoords="offset points",
                                xytext=(4, -10), fontsize=7)
    for ax, xlabel in ((axes[0], "classes K (T = distinct sets, up to 15,806)"),
                       (axes[1], "label sets T (K = 40)")):
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 300)  # room for the legend above the data
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds per certified solve")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a sweep may not have been run
            ax.legend(title="path, device (labels: GFLOP/s)", fontsize=7, title_fontsize=7,
                      loc="upper left")
    fig.suptitle("BCE, d = K, λ = 5e-3, tol 1e-10, float64, init mse (delicious subsets; "
                 "K = 983 is all of delicious)", fontsize=9)
    fig.tight_layout()
    tmp = png + ".tmp.png"
    fig.savefig(tmp, dpi=130)
    os.replace(tmp, png)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--ks", type=int, nargs="+", help="K sweep (default 10 … 320)")
    ap.add_argument("--ns", type=int, nargs="*", help="T sweep: documents kept (K = 40)")
    ap.add_argument("--exact-max-gb", type=float, default=4.0,
                    help="skip the exact path where its per-set factors need more")
    ap.add_argument("--warm-max-k", type=int, default=200,
                    help="from this K on, one run per point, compile time included")
    ap.add_argument("--out", default=os.path.join(HERE, "scaling.json"))
    ap.add_argument("--plot", nargs="+", metavar="JSON", help="only plot these result files")
    ap.add_argument("--table", metavar="JSON", help="print a result file as a Markdown table")
    ap.add_argument("--png", default=os.path.join(os.path.dirname(HERE), "figures", "scaling.png"))
    a = ap.parse_args()
    if a.table:
        print(table(a.table))
    elif a.plot:
        plot(a.plot, a.png)
    else:
        run(a.quick, a.out, a.repeat, a.ks, a.ns, a.exact_max_gb, a.warm_max_k)
        plot([a.out], a.png)
