"""Benchmark: one engine behind `solve` and `solve_batch`, against an optax L-BFGS loop.

For each real label distribution (shipped tables; PAL and BCE, d = K, λ_W = λ_H = 5e-3,
float64), in one process:

* `solve(dist, cfg)`: the Newton engine on one problem (to block residual ≤ 1e-10,
  THEORY §2c);
* `solve_batch([dist], cfg).item(0)`: the same engine through the batch entry point;
* the baseline `bench/lbfgs_baseline.py`: a jit-compiled optax L-BFGS `while_loop` from
  the same start to the same tolerance (block residual ≤ 1e-10), capped at 20,000
  iterations; its block residual and ρ are reported as measured by the package.

Compile time (first call) is reported apart from run time (median of `--repeat` calls).
Then the compile count of a sweep over many supports (the compile caches of the slot programs), and the
peak memory (VmHWM) of a problem with 100,000 distinct rows (K = d = 20) in a subprocess.

Usage: python bench/bench_engine.py [--repeat 3] [--no-big] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def _timed(fn, repeat):
    t = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t)
    runs.sort()
    run = runs[len(runs) // 2]
    return out, max(first - run, 0.0), run


def single_problem_rows(repeat):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from lbfgs_baseline import lbfgs

    import mlnc_jax as mj
    from mlnc_jax.engine.newton import Problem, block_residual, value_grad

    jax.config.update("jax_enable_x64", True)
    rows = []
    for name in ("yeast", "voc2007_trainval", "emotions"):
        dist = mj.load_real(name)
        K, T = dist.num_classes, dist.num_sets
        for loss in ("pal", "bce"):
            cfg = mj.UFMConfig(loss, K, 5e-3, 5e-3)
            one, c1, r1 = _timed(lambda dist=dist, cfg=cfg: mj.solve(dist, cfg), repeat)
            bat, c2, r2 = _timed(lambda dist=dist, cfg=cfg: mj.solve_batch([dist], cfg, progress=False).item(0),
                                 repeat)
            p0 = mj.init_params(jax.random.PRNGKey(0), K, T, cfg, 0.1, jnp.float64)
            (pl, iters), c3, r3 = _timed(
                lambda p0=p0, dist=dist, cfg=cfg: lbfgs(p0, dist, cfg, tol=1e-10, max_iter=20000), repeat)
            Y, w = jnp.asarray(dist.label_sets), jnp.asarray(dist.weights)
            U = pl.H * jnp.sqrt(w)[:, None]
            prob = Problem(Y, w, jnp.asarray([5e-3, 5e-3, 0.0]))
            f, gW, gU, gb, G, _ = value_grad(pl.W, U, pl.b, prob, cfg.loss_record, True)
            res_l = float(block_residual(pl.W, U, pl.b, gW, gU, gb, G, prob, True))
            rho_l = float(mj.certificate(pl, Y, w, cfg))
            same = max(float(np.max(np.abs(np.asarray(getattr(one, k)) - np.asarray(getattr(bat, k)))))
                       for k in ("W", "H", "b", "objective"))
            rows.append(dict(dataset=name, K=K, T=T, loss=loss, solve_s=r1, solve_compile_s=c1,
                             batch_s=r2, batch_compile_s=c2, lbfgs_s=r3, lbfgs_compile_s=c3,
                             lbfgs_iters=iters, lbfgs_residual=res_l, lbfgs_rho_minus_1=rho_l - 1,
                             newton_steps=int(one.steps), status=str(one.status),
                             residual=float(one.residual), rho_minus_1=float(one.certificate) - 1,
                             max_abs_diff_solve_vs_batch=same,
                             objective_gap_vs_lbfgs=float(one.objective) - float(f)))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def compile_counts():
    """A sweep over 48 supports (T from 4 to 176, K = 8): how many programs are compiled."""
    import numpy as np

    import mlnc_jax as mj
    from mlnc_jax.engine import placement

    rng = np.random.default_rng(0)
    dists = []
    for i in range(48):
        d = mj.random_correlated(8, i, max_multiplicity=3)
        keep = np.sort(rng.choice(d.num_sets, size=int(rng.integers(4, d.num_sets + 1)), replace=False))
        dists.append(mj.LabelDistribution(np.asarray(d.label_sets)[keep],
                                          np.asarray(d.weights)[keep] / np.asarray(d.weights)[keep].sum(), 8))
    programs = (placement._init_slots, placement._advance, placement._refill, placement._summaries)
    count = lambda: {f.__name__: f._cache_size() for f in programs}
    before = count()
    t = time.perf_counter()
    res = mj.solve_batch(dists, mj.UFMConfig("mse", 8, 5e-3, 5e-3), progress=False)
    wall = time.perf_counter() - t
    sizes = sorted({d.num_sets for d in dists})
    buckets = sorted({placement.bucket_rows(T) for T in sizes})
    after = count()
    return dict(problems=len(dists), distinct_T=len(sizes), buckets=buckets,
                compiled_advance=after["_advance"] - before["_advance"],
                compiled_total=sum(after.values()) - sum(before.values()),
                certified=int(np.sum(res.certified)), wall_s=wall)


_BIG = """
import json, time, numpy as np
import mlnc_jax as mj
rng = np.random.default_rng(0)
Y = np.unique((rng.random((400_000, 20)) < 0.25).astype(np.float64), axis=0)
Y = Y[rng.permutation(Y.shape[0])[:100_000]]
w = rng.random(Y.shape[0]) + 0.5
d = mj.LabelDistribution(Y, w / w.sum(), 20)
t = time.perf_counter()
res = mj.solve(d, mj.UFMConfig("pal", 20, 5e-3, 5e-3), progress=False, warn=False)
peak = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"T": int(Y.shape[0]), "K": 20, "d": 20, "status": str(res.status),
                  "steps": int(res.steps), "seconds": time.perf_counter() - t, "maxrss_mb": peak}))
"""


def big_problem():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.path.dirname(HERE))
    p = subprocess.run([sys.executable, "-c", _BIG], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": p.stderr[-500:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _table(rows, counts, big) -> str:
    out = ["| dataset | K | T | loss | `solve` s | `solve_batch([d])` s | L-BFGS s | L-BFGS / `solve` "
           "| compile s (solve / batch / L-BFGS) | Newton steps | L-BFGS iters | status | "
           "residual (Newton / L-BFGS) | ρ−1 (Newton / L-BFGS) |",
           "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        out.append(f"| {r['dataset']} | {r['K']} | {r['T']} | {r['loss']} | {r['solve_s']:.3f} | "
                   f"{r['batch_s']:.3f} | {r['lbfgs_s']:.3f} | {r['lbfgs_s'] / r['solve_s']:.1f}× | "
                   f"{r['solve_compile_s']:.1f} / {r['batch_compile_s']:.1f} / {r['lbfgs_compile_s']:.1f} | "
                   f"{r['newton_steps']} | {r['lbfgs_iters']} | {r['status']} | "
                   f"{r['residual']:.1e} / {r['lbfgs_residual']:.1e} | "
                   f"{r['rho_minus_1']:.1e} / {r['lbfgs_rho_minus_1']:.1e} |")
    out += ["", f"Compile counts: {counts['problems']} problems with {counts['distinct_T']} distinct "
            f"T in one `solve_batch` call ran in {counts['wall_s']:.1f} s and compiled "
            f"{counts['compiled_advance']} Newton programs ({counts['compiled_total']} programs in all) "
            f"for the row buckets {counts['buckets']}; {counts['certified']} certified."]
    if big:
        out += ["", "Memory: " + (f"T = {big['T']:,} distinct rows, K = {big['K']}, d = {big['d']}, "
                                 f"pal: {big['status']} in {big['steps']} Newton steps, "
                                 f"{big['seconds']:.0f} s, peak RSS {big['maxrss_mb']:.0f} MB."
                                 if "error" not in big else f"failed: {big['error']}")]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-big", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = single_problem_rows(args.repeat)
    counts = compile_counts()
    print(json.dumps(counts), flush=True)
    big = None if args.no_big else big_problem()
    print(json.dumps(big), flush=True)
    import jax

    import mlnc_jax as mj

    table = _table(rows, counts, big)
    stamp = (f"Machine: {os.cpu_count()} CPUs, {platform.platform()}; Python "
             f"{platform.python_version()}; jax {jax.__version__}; mlnc_jax {mj.__version__}; "
             f"{datetime.date.today()}.")
    print(table + "\n\n" + stamp)
    if not args.no_write:
        with open(os.path.join(HERE, "RESULTS_engine.md"), "w") as f:
            f.write("# One engine: `solve`, `solve_batch` and an L-BFGS loop\n\nProduced by "
                    "`python bench/bench_engine.py`.\n\n" + table + "\n\n" + stamp + "\n")


if __name__ == "__main__":
    main()
