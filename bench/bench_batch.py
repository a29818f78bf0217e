"""Benchmark: `solve_batch` against a straightforward jit-compiled L-BFGS loop.

Problem set (the issue's): `random_correlated(10, seed, max_multiplicity=2)` for
`seed = 0..N-1` (K = 10, all 55 label sets of multiplicity ≤ 2), d = 16,
λ_W = λ_H = 5e-3, loss `pal`, float64, every problem to ‖∇F‖ ≤ 1e-8.

Baseline (run in the same process, on the first `--baseline` problems): the package's
`bench/lbfgs_baseline.py` — an optax L-BFGS (zoom line search) `while_loop`, jit-compiled
once — from `init_params(PRNGKey(seed), …, 0.1)`, one problem after the other.

Usage:
    python bench/bench_batch.py                       # 1,024 problems, 1 and 2 host devices
    python bench/bench_batch.py --num 256 --host-devices 1 --no-write

With `--host-devices N` the script re-runs itself with
`XLA_FLAGS=--xla_force_host_platform_device_count=N` (XLA:CPU runs one device per core),
so `solve_batch` shards the batch over N devices; the baseline always uses one.
Writes the table to bench/RESULTS.md unless `--no-write`.
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


def run_one(args) -> dict:
    """Runs in a process whose XLA_FLAGS are already set."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from lbfgs_baseline import lbfgs

    import mlnc_jax as mj
    from mlnc_jax import solve_batch

    jax.config.update("jax_enable_x64", True)
    cfg = mj.UFMConfig(args.loss, args.dim, args.lam, args.lam)
    dists = [mj.random_correlated(10, s, max_multiplicity=2) for s in range(args.num)]
    rows = []

    @jax.jit
    def check(p, Y, w):  # ‖∇F‖ in (W, H, b) and the certificate ρ of a baseline solution
        g = jax.grad(mj.objective)(p, Y, w, cfg)
        return jnp.sqrt(sum(jnp.sum(x * x) for x in g)), mj.certificate(p, Y, w, cfg)

    # -- baseline: one problem after the other ------------------------------------------
    nb = min(args.baseline, args.num)
    t0 = time.perf_counter()
    p0 = mj.init_params(jax.random.PRNGKey(0), 10, dists[0].num_sets, cfg, 0.1, jnp.float64)
    jax.block_until_ready(lbfgs(p0, dists[0], cfg, tol=args.tol, max_iter=100000)[0])
    base_compile = time.perf_counter() - t0  # compile + one solve
    times, gns, rhos = [], [], []
    for s in range(1, nb + 1):
        d = dists[s % args.num]
        p0 = mj.init_params(jax.random.PRNGKey(s % args.num), 10, d.num_sets, cfg, 0.1, jnp.float64)
        t = time.perf_counter()
        p, _ = lbfgs(p0, d, cfg, tol=args.tol, max_iter=100000)
        jax.block_until_ready(p)
        times.append(time.perf_counter() - t)
        gn, rho = check(p, jnp.asarray(d.label_sets), jnp.asarray(d.weights))
        gns.append(float(gn))
        rhos.append(float(rho))
    base_ms = 1e3 * float(np.mean(times))
    rows.append(dict(method="optax L-BFGS while_loop, one by one (baseline)", n=nb,
                     ms=base_ms, compile=base_compile - base_ms / 1e3,
                     worst_grad=max(gns), worst_rho=max(abs(r - 1) for r in rhos), speedup=1.0))

    # -- solve_batch ------------------------------------------------------------------------
    n_dev = len(jax.devices())
    for j, init in enumerate(args.init):
        kw = dict(tol=args.tol, init=None if init == "random" else init, progress=False)
        if args.batch_size:
            kw["batch_size"] = args.batch_size
        # compile (first call on one group), then the timed run over all problems
        g = (args.batch_size or 16 * n_dev)
        t = time.perf_counter()
        solve_batch(dists[:g], cfg, seeds=np.arange(g), **kw)
        warm = time.perf_counter() - t
        res = None
        best = None
        for _ in range(args.repeat):
            t = time.perf_counter()
            r = solve_batch(dists, cfg, seeds=np.arange(args.num), **kw)
            dt = time.perf_counter() - t
            if best is None or dt < best:
                best, res = dt, r
        ms = 1e3 * best / args.num
        gn = np.asarray(res.grad_norm)
        rho = np.asarray(res.certificate)
        rows.append(dict(
            method=f"solve_batch, init={init}, {n_dev} device{'s' if n_dev > 1 else ''}",
            n=args.num, ms=ms, compile=max(warm - g * ms / 1e3, 0.0) if j == 0 else None,
            worst_grad=float(gn.max()), worst_rho=float(np.abs(rho - 1).max()),
            speedup=base_ms / ms, converged=int(np.sum(np.asarray(res.converged))),
            certified=int(np.sum(np.abs(rho - 1) <= 1e-5)),
            steps_mean=float(np.mean(np.asarray(res.steps))),
            steps_max=int(np.max(np.asarray(res.steps)))))
    return dict(rows=rows, devices=n_dev, device_kind=jax.devices()[0].device_kind,
                platform=jax.devices()[0].platform, jax=jax.__version__,
                version=mj.__version__)


def table(results) -> str:
    head = ("| method | problems | ms / problem | problems / s | compile s | worst ‖∇F‖ "
            "| worst \\|ρ−1\\| | certified | Newton steps mean / max | speed-up vs baseline |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for res in results:
        for r in res["rows"]:
            cert = f"{r['certified']}/{r['n']}" if "certified" in r else "—"
            steps = f"{r['steps_mean']:.1f} / {r['steps_max']}" if "steps_mean" in r else "—"
            comp = "(same program)" if r["compile"] is None else f"{r['compile']:.1f}"
            lines.append(
                f"| {r['method']} | {r['n']} | {r['ms']:.2f} | {1e3 / r['ms']:.1f} | "
                f"{comp} | {r['worst_grad']:.2e} | {r['worst_rho']:.1e} | {cert} | {steps} | "
                f"{r['speedup']:.1f}× |")
    return head + "\n".join(lines) + "\n"


NOTES = """Notes. Compile time is reported separately (first call on one group, minus its
share of the steady-state time); the timed run excludes it. Both `solve_batch` rows of a
process share one compiled program. `init=mse` starts from the MSE closed form for the
same λ plus the seeded random init (fewer Newton steps); `init=random` starts exactly
where `solve` starts. With `N` host devices the batch is sharded over `N` XLA:CPU devices
(one core each); the baseline loop always runs on one. The machine is a shared 2-vCPU VM:
absolute times vary by ±20% from run to run (steal time), ratios are measured in the
same process, minutes apart. Every `solve_batch` problem is checked: ‖∇F‖ ≤ 1e-8 and
|ρ − 1| ≤ 1e-5 (the certificate of THEORY §3).
"""


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num", type=int, default=1024, help="problems for solve_batch")
    ap.add_argument("--baseline", type=int, default=24, help="problems for the baseline loop")
    ap.add_argument("--host-devices", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--init", nargs="+", default=["random", "mse"], choices=["random", "mse"])
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=1, help="timed runs of solve_batch (best kept)")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--lam", type=float, default=5e-3)
    ap.add_argument("--loss", default="pal")
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(json.dumps(run_one(args)))
        return
    results = []
    for n in args.host_devices:
        env = dict(os.environ)
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
        env.setdefault("JAX_PLATFORMS", "cpu")
        cmd = [sys.executable, os.path.abspath(__file__), "--child"] + [
            a for a in (argv if argv is not None else sys.argv[1:])]
        print(f"running with {n} host device(s)...", file=sys.stderr, flush=True)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.stderr.write(out.stderr)
            raise SystemExit(f"benchmark child failed ({n} devices)")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    tab = table(results)
    info = (f"Machine: {os.cpu_count()} CPUs ({cpu_model()}), {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}; jax "
            f"{results[0]['jax']}; mlnc_jax {results[0]['version']}; "
            f"{datetime.date.today().isoformat()}.")
    print(tab)
    print(info)
    if not args.no_write:
        path = os.path.join(HERE, "RESULTS.md")
        with open(path + ".tmp", "w") as f:
            f.write("# solve_batch benchmark\n\n")
            f.write("Produced by `" + " ".join(["python", "bench/bench_batch.py"] + sys.argv[1:])
                    + "`.\n\n")
            f.write(__doc__.split("Usage:")[0].split("\n", 1)[1].strip() + "\n\n")
            f.write(tab + "\n" + info + "\n\n" + NOTES)
        os.replace(path + ".tmp", path)
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
