"""The `mlnc-jax` command line.

Bad input exits with status 2 and one line `mlnc-jax: error: ...` on stderr, no traceback,
and nothing is written to `--out`. Ctrl-C exits with status 130 and one line, leaving no
partial file. A result that was computed but cannot be written to `--out` is written to a
fresh temporary directory instead, its results line is printed, and the exit status is 2
with a line naming both paths: finished compute is never lost. An optimum that cannot be
differentiated (`RankChangeError`, `NotCertifiedError`) exits with status 3.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

from ..engine import compile_cache, interrupts
from ..io import schema
from ..io.real_labels import load_labels
from ..model.errors import (
    CollectiveTimeoutError,
    InputError,
    NotCertifiedError,
    RankChangeError,
    SolverDivergedError,
)
from ..model.losses import LOSS_ALIASES, LOSSES
from .outputs import check_figure, check_out, write_results

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line."""

    def error(self, message):
        # one prefix for every refusal, whichever subcommand's parser found it
        sub = self.prog.partition(" ")[2]
        raise InputError(f"mlnc-jax: error: {sub + ': ' if sub else ''}{message}")


def _positive_int(name):
    """An integer in `[1, 2**31)`: counts and dimensions are int32 inside the engine."""
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {s!r}") from None
        if not 1 <= v < schema.MAX_COUNT:
            raise argparse.ArgumentTypeError(f"{name} must be in [1, 2**31), got {s}")
        return v
    return parse


def _nonneg_float(name, positive=False):
    def parse(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {s!r}") from None
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise argparse.ArgumentTypeError(
                f"{name} must be a finite number {'>' if positive else '>='} 0, got {s}")
        return v
    return parse


def _seed(name):
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {s!r}") from None
        if not 0 <= v < schema.MAX_SEED:
            raise argparse.ArgumentTypeError(f"{name} must be in [0, 2**63), got {s}")
        return v
    return parse


def _add_problem_args(p, *, loss_required=True, dim_required=True):
    p.add_argument("--labels", required=True, metavar="DIST.json",
                   help='label distribution file {"num_classes": K, "label_sets": [[0], [1, 2]], '
                   '"weights": [...]}, or a shipped table name (e.g. voc2007_trainval)')
    p.add_argument("--loss", required=loss_required, choices=(*LOSSES, *LOSS_ALIASES), default=None)
    if dim_required:
        p.add_argument("--dim", required=True, type=_positive_int("--dim"), metavar="D")
    p.add_argument("--lambda-w", required=True, type=_nonneg_float("--lambda-w"), metavar="LW")
    p.add_argument("--lambda-h", required=True, type=_nonneg_float("--lambda-h"), metavar="LH")
    p.add_argument("--lambda-b", default=0.0, type=_nonneg_float("--lambda-b"), metavar="LB")
    p.add_argument("--no-bias", action="store_true", help="fix b = 0")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mlnc-jax", description="Neural collapse in multi-label learning: "
                     "exact UFM solves, spectral closed forms and certificates.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_solve(sub)
    _add_closed_form(sub)
    _add_compare(sub)
    _add_spectrum(sub)
    _add_measure(sub)
    _add_sweep(sub)
    for p in sub.choices.values():
        p.add_argument("--compile-cache", default=None, metavar="DIR|off",
                       help="persistent XLA compilation cache (default: MLNC_CACHE_DIR, else "
                            "~/.cache/mlnc_jax/xla); 'off' compiles everything afresh")
    return parser


def _add_solve(sub):
    p = sub.add_parser("solve", help="solve the reduced UFM for a label distribution")
    _add_problem_args(p)
    p.add_argument("--seed", type=_seed("--seed"), default=0)
    p.add_argument("--tol", type=_nonneg_float("--tol", positive=True), default=1e-10,
                   help="stop when every relative block residual is <= TOL (THEORY §2c)")
    p.add_argument("--cert-tol", type=_nonneg_float("--cert-tol", positive=True), default=1e-6,
                   help="certified when rho <= 1 + CERT_TOL at a converged point (THEORY §2c); "
                   "at least 1e-12, what float64 resolves of rho")
    p.add_argument("--max-steps", type=_positive_int("--max-steps"), default=500,
                   help="Newton steps at most")
    p.add_argument("--allow-uncertified", action="store_true",
                   help="exit 0 for a result that is not certified (it is still labelled so)")
    p.add_argument("--method", choices=("auto", "exact", "matrix_free"), default="auto",
                   help="Newton directions by exact prototype elimination or matrix-free CG "
                        "(auto: by the flop and memory estimate; large label spaces need "
                        "matrix_free)")
    p.add_argument("--init", choices=("random", "mse"), default="random",
                   help="start from the seeded random point or the MSE closed form")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: shown when stderr is a terminal)")
    p.add_argument("--out", required=True, metavar="RESULT.npz")
    p.set_defaults(func=_cmd_solve)


def _add_closed_form(sub):
    p = sub.add_parser("closed-form", help="exact closed-form solution (THEORY §4-§5)")
    _add_problem_args(p, dim_required=False)
    p.add_argument("--dim", type=_positive_int("--dim"), default=None, metavar="D",
                   help="feature dimension (default: K, enough for every direction)")
    p.add_argument("--out", required=True, metavar="CF.npz")
    p.set_defaults(func=_cmd_closed_form)


def _add_compare(sub):
    p = sub.add_parser("compare", help="solve all four losses on one distribution and compare "
                       "with the MSE closed form (default: an embedded imbalanced distribution)")
    p.add_argument("--labels", default=None, metavar="DIST.json")
    p.add_argument("--dim", type=_positive_int("--dim"), default=None)
    p.add_argument("--lambda-w", type=_nonneg_float("--lambda-w"), default=5e-3)
    p.add_argument("--lambda-h", type=_nonneg_float("--lambda-h"), default=5e-3)
    p.add_argument("--seed", type=_seed("--seed"), default=0)
    p.add_argument("--figure", default="mlnc_compare.png", metavar="PATH",
                   help="where to write the figure (png or pdf)")
    p.set_defaults(func=_cmd_compare)


def _add_spectrum(sub):
    p = sub.add_parser("spectrum", help="label spectra and kappa_m (THEORY §1), collapse "
                       "thresholds (§3)")
    p.add_argument("--labels", required=True, metavar="DIST.json|LABELS.npy|NAME",
                   help="distribution JSON, binary [N, K] label matrix (.npy) or shipped table name")
    p.add_argument("--json", action="store_true",
                   help="print exactly one JSON object on stdout instead of the table")
    p.set_defaults(func=_cmd_spectrum)


def _add_measure(sub):
    from .measure_cli import measure_command

    p = sub.add_parser("measure", help="a trained network's last layer (features, labels, "
                       "classifier from .npy/.npz/.safetensors) against the certified UFM optimum")
    p.add_argument("--features", required=True, metavar="FILE[:KEY]", help="[N, d] last-layer features")
    p.add_argument("--labels", required=True, metavar="FILE[:KEY]", help="[N, K] binary labels")
    p.add_argument("--classifier", required=True, metavar="FILE[:KEY]", help="[K, d] last-layer weights")
    p.add_argument("--bias", default=None, metavar="FILE[:KEY]", help="[K] bias (omit: no bias)")
    p.add_argument("--loss", required=True, choices=sorted(set(LOSSES) | set(LOSS_ALIASES)))
    p.add_argument("--lambda-w", type=_nonneg_float("--lambda-w", positive=True), default=None,
                   help="the network's λ_W (omit with --lambda-h to fit both to its geometry)")
    p.add_argument("--lambda-h", type=_nonneg_float("--lambda-h", positive=True), default=None)
    p.add_argument("--lambda-b", type=_nonneg_float("--lambda-b"), default=0.0)
    p.add_argument("--seed", type=_seed("--seed"), default=0)
    p.add_argument("--tol", type=_nonneg_float("--tol", positive=True), default=1e-10)
    p.add_argument("--chunk-rows", type=_positive_int("--chunk-rows"), default=None,
                   help="feature rows per streamed block (default: about 64 MB of float64)")
    p.add_argument("--out", required=True, metavar="REPORT.json")
    p.add_argument("--figure", default=None, metavar="FIG.png")
    p.set_defaults(func=measure_command)


def _add_sweep(sub):
    try:
        from .sweep_cli import add_sweep_parser
    except ImportError:
        return
    add_sweep_parser(sub)


def _config(args, dim=None):
    from ..model.ufm import UFMConfig

    schema.check_lambdas(args.lambda_w, args.lambda_h, args.lambda_b)
    return UFMConfig(args.loss, dim if dim is not None else args.dim, args.lambda_w,
                     args.lambda_h, args.lambda_b, not args.no_bias).validate()


def _cmd_solve(args):
    from ..engine.solve import solve
    from ..io.results import run_metadata

    out = check_out(args.out, [("--labels", args.labels)])
    if not 0 < args.tol < 1:
        raise InputError(f"--tol must be a number in (0, 1), got {args.tol}")
    schema.check_cert_tol(args.cert_tol, "--cert-tol")
    dist = load_labels(args.labels)
    config = _config(args)
    t0 = time.perf_counter()
    res = solve(dist, config, seed=args.seed, tol=args.tol, cert_tol=args.cert_tol,
                max_steps=args.max_steps, warn=False, method=args.method,
                init=None if args.init == "random" else args.init,
                progress=False if args.no_progress else None)
    wall = time.perf_counter() - t0
    arrays = dict(W=res.W, H=res.H, b=res.b, objective=res.objective, grad_norm=res.grad_norm,
                  residual=res.residual, certificate=res.certificate, converged=res.converged,
                  certified=res.certified, status=res.status, steps=res.steps,
                  hessian_products=res.hessian_products,
                  label_sets=dist.label_sets, weights=dist.weights)
    meta = run_metadata(command="solve", config=config.as_dict(), seed=args.seed, tol=args.tol,
                        cert_tol=args.cert_tol, method=args.method, init=args.init,
                        labels=str(args.labels), label_sets=dist.sets,
                        num_classes=dist.num_classes, wall_time_s=wall,
                        objective=float(res.objective), grad_norm=float(res.grad_norm),
                        residual=float(res.residual), certificate=float(res.certificate),
                        converged=bool(res.converged), certified=bool(res.certified),
                        status=str(res.status), reason=str(res.reason),
                        global_optimum=bool(res.certified))
    saved = write_results(out, arrays, meta)
    what = "certified global optimum" if res.certified else f"{res.status} ({res.reason})"
    print(f"{what}: F = {float(res.objective):.12g}, residual = {float(res.residual):.1e}, "
          f"rho = {float(res.certificate):.9f}, {int(res.steps)} Newton steps, {wall:.2f} s "
          f"-> {saved.path}", flush=True)
    saved.raise_if_fallback()
    if res.certified or args.allow_uncertified:
        return 0
    print(f"mlnc-jax: not certified ({res.status}): {_one_line(res.reason)}; the result is "
          "written with its status; --allow-uncertified accepts it", file=sys.stderr)
    return 1


def _cmd_closed_form(args):
    from ..io.results import run_metadata
    from ..theory.closed_forms import closed_form

    out = check_out(args.out, [("--labels", args.labels)])
    dist = load_labels(args.labels)
    config = _config(args, dim=args.dim or dist.num_classes)
    # eigh of a [K, K] matrix plus W [K, d], H [T, d]: the matrix-free solve estimate bounds it
    schema.check_memory(schema.estimate_solve_bytes(dist.num_classes, dist.num_sets, config.dim,
                                                    method="matrix_free"),
                        f"closed form with K = {dist.num_classes}, dim = {config.dim}")
    t0 = time.perf_counter()
    cf = closed_form(dist, config)
    arrays = dict(gram_W=cf.gram_W, gram_H=cf.gram_H, logits=cf.logits, b=cf.b,
                  objective=cf.objective, rank=cf.rank, W=cf.params.W, H=cf.params.H,
                  eigenvalues=cf.eigenvalues, label_sets=dist.label_sets, weights=dist.weights)
    meta = run_metadata(command="closed-form", config=config.as_dict(), labels=str(args.labels),
                        label_sets=dist.sets, num_classes=dist.num_classes,
                        wall_time_s=time.perf_counter() - t0, objective=float(cf.objective),
                        rank=int(cf.rank))
    saved = write_results(out, arrays, meta)
    print(f"closed form ({config.loss_record.name}): F* = {float(cf.objective):.12g}, "
          f"rank {int(cf.rank)} -> {saved.path}", flush=True)
    saved.raise_if_fallback()
    return 0


def _cmd_compare(args):
    from .plotting import compare_figure
    from .report import compare_losses, default_distribution, format_compare_table

    fig_path = check_figure(args.figure)
    schema.check_lambdas(args.lambda_w, args.lambda_h)
    dist = load_labels(args.labels) if args.labels else default_distribution()
    report = compare_losses(dist, dim=args.dim, lambda_w=args.lambda_w, lambda_h=args.lambda_h,
                            seed=args.seed)
    print(format_compare_table(report), flush=True)  # the numbers survive a failed figure write
    try:
        compare_figure(report, fig_path)
    except OSError as e:
        raise InputError(f"cannot write the figure {fig_path}: {e.strerror or e} "
                         "(the table above is complete)") from None
    print(f"figure -> {fig_path}")
    return 0


def _cmd_spectrum(args):
    import json

    from ..theory.spectra import format_spectrum_table, label_spectrum, spectrum_to_json

    spec = label_spectrum(load_labels(args.labels))
    if args.json:
        print(json.dumps(spectrum_to_json(spec), allow_nan=False))
    else:
        print(format_spectrum_table(spec))
    return 0


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def main(argv=None, *, hard_exit: bool = False) -> int:
    """Run the command line; returns the exit status.

    `hard_exit=True` (the console script) leaves through `os._exit(130)` on Ctrl-C, after
    every `finally` block has cleaned up and stdout/stderr are flushed. A normal interpreter
    exit at that point runs JAX's atexit hook, which tears down the XLA CPU client while a
    computation dispatched asynchronously (before the interrupt) may still be running on
    its thread pool; that is the segfault (exit -11) seen after "interrupted".
    """
    import jax

    # the command line is a float64 application: every result file says dtype float64
    jax.config.update("jax_enable_x64", True)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.compile_cache is not None:
            compile_cache.enable(args.compile_cache)
        else:
            compile_cache.ensure()
        with interrupts.guard():
            return int(args.func(args) or 0)
    except InputError as e:
        msg = _one_line(e)
        print(msg if msg.startswith("mlnc-jax") else f"mlnc-jax: error: {msg}", file=sys.stderr)
        return 2
    except SolverDivergedError as e:
        print(f"mlnc-jax: solver error: {_one_line(e)}", file=sys.stderr)
        return 1
    except (RankChangeError, NotCertifiedError) as e:  # the optimum, not the input
        print(f"mlnc-jax: not differentiable here: {_one_line(e)}", file=sys.stderr)
        return 3
    except CollectiveTimeoutError as e:  # device threads are blocked: no teardown
        print(f"mlnc-jax: error: {_one_line(e)}", file=sys.stderr)
        if hard_exit:
            _exit_now(1)
        return 1
    except KeyboardInterrupt:
        print("mlnc-jax: interrupted", file=sys.stderr)
        if hard_exit:
            _exit_now(130)
        return 130
    except MemoryError:
        print("mlnc-jax: error: out of memory (try a smaller problem)", file=sys.stderr)
        return 2


def _exit_now(code: int) -> None:
    """Flush and leave without interpreter teardown (see `main`)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe must not turn into a traceback
            pass
    os._exit(code)


def console_main() -> None:
    """Entry point of the `mlnc-jax` console script."""
    sys.exit(main(hard_exit=True))


if __name__ == "__main__":  # pragma: no cover
    console_main()
