"""The `mlnc-jax` command line.

Bad input exits with status 2 and one line `mlnc-jax: error: ...` on stderr, no traceback,
and nothing is written to `--out`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path


from .errors import InputError, SolverDivergedError

from .real_labels import load_labels

__all__ = ["main", "build_parser"]

LOSS_CHOICES = ("pal", "pal_normalized", "bce", "mse")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line."""

    def error(self, message):
        raise InputError(f"{self.prog}: error: {message}")


def _int_at_least(name, low):
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {s!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{name} must be >= {low}, got {v}")
        return v
    return parse


def _positive_int(name):
    return _int_at_least(name, 1)


def _nonneg_int(name):
    return _int_at_least(name, 0)


def _nonneg_float(name):
    def parse(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {s!r}") from None
        if not math.isfinite(v) or v < 0:
            raise argparse.ArgumentTypeError(f"{name} must be a finite number >= 0, got {s}")
        return v
    return parse


def _add_problem_args(p, *, loss_required=True, loss_choices=LOSS_CHOICES, dim_required=True):
    p.add_argument("--labels", required=True, metavar="DIST.json",
                   help='label distribution file {"num_classes": K, "label_sets": [[0], [1, 2]], '
                   '"weights": [...]}, or a shipped table name (e.g. voc2007_trainval)')
    p.add_argument("--loss", required=loss_required, choices=loss_choices, default=None)
    if dim_required:
        p.add_argument("--dim", required=True, type=_positive_int("--dim"), metavar="D")
    p.add_argument("--lambda-w", required=True, type=_nonneg_float("--lambda-w"), metavar="LW")
    p.add_argument("--lambda-h", required=True, type=_nonneg_float("--lambda-h"), metavar="LH")
    p.add_argument("--lambda-b", default=0.0, type=_nonneg_float("--lambda-b"), metavar="LB")
    p.add_argument("--no-bias", action="store_true", help="fix b = 0")


def _check_out(path: str, suffix: str = ".npz") -> Path:
    out = Path(path)
    if out.suffix != suffix:
        raise InputError(f"--out must end in {suffix}: {path}")
    if not out.parent.exists():
        raise InputError(f"output directory does not exist: {out.parent}")
    if out.is_dir():
        raise InputError(f"--out is a directory: {path}")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mlnc-jax", description="Neural collapse in multi-label learning: "
                     "exact UFM solves, spectral closed forms and certificates.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("solve", help="solve the reduced UFM for a label distribution")
    _add_problem_args(p)
    p.add_argument("--seed", type=_nonneg_int("--seed"), default=0)
    p.add_argument("--tol", type=float, default=1e-10,
                   help="stop when every relative block residual is <= TOL (THEORY §2c)")
    p.add_argument("--cert-tol", type=float, default=1e-6,
                   help="certified when rho <= 1 + CERT_TOL at a converged point (THEORY §2c)")
    p.add_argument("--max-steps", type=_positive_int("--max-steps"), default=500,
                   help="Newton steps at most")
    p.add_argument("--allow-uncertified", action="store_true",
                   help="exit 0 for a result that is not certified (it is still labelled so)")
    p.add_argument("--out", required=True, metavar="RESULT.npz")
    p.set_defaults(func=_cmd_solve)

    p = sub.add_parser("closed-form", help="exact closed-form solution (THEORY §4-§5)")
    _add_problem_args(p, dim_required=False)
    p.add_argument("--dim", type=_positive_int("--dim"), default=None, metavar="D",
                   help="feature dimension (default: K, enough for every direction)")
    p.add_argument("--out", required=True, metavar="CF.npz")
    p.set_defaults(func=_cmd_closed_form)

    p = sub.add_parser("compare", help="solve all four losses on one distribution and compare "
                       "with the MSE closed form (default: an embedded imbalanced distribution)")
    p.add_argument("--labels", default=None, metavar="DIST.json")
    p.add_argument("--dim", type=_positive_int("--dim"), default=None)
    p.add_argument("--lambda-w", type=_nonneg_float("--lambda-w"), default=5e-3)
    p.add_argument("--lambda-h", type=_nonneg_float("--lambda-h"), default=5e-3)
    p.add_argument("--seed", type=_nonneg_int("--seed"), default=0)
    p.add_argument("--figure", default="mlnc_compare.png", metavar="PATH",
                   help="where to write the figure (png or pdf)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("spectrum", help="label spectra and kappa_m (THEORY §1), collapse "
                       "thresholds (§3)")
    p.add_argument("--labels", required=True, metavar="DIST.json|LABELS.npy|NAME",
                   help="distribution JSON, binary [N, K] label matrix (.npy) or shipped table name")
    p.add_argument("--json", action="store_true",
                   help="print exactly one JSON object on stdout instead of the table")
    p.set_defaults(func=_cmd_spectrum)

    _add_sweep(sub)
    return parser


def _add_sweep(sub):
    try:
        from .sweep import add_sweep_parser
    except ImportError:
        return
    add_sweep_parser(sub)


def _config(args, dim=None):
    from .ufm import UFMConfig

    return UFMConfig(args.loss, dim if dim is not None else args.dim, args.lambda_w,
                     args.lambda_h, args.lambda_b, not args.no_bias).validate()


def _cmd_solve(args):
    from .results_io import run_metadata, write_npz_atomic
    from .solve import solve

    out = _check_out(args.out)
    dist = load_labels(args.labels)
    config = _config(args)
    for flag, v in (("--tol", args.tol), ("--cert-tol", args.cert_tol)):
        if not 0 < v < 1:
            raise InputError(f"{flag} must be a number in (0, 1), got {v}")
    t0 = time.perf_counter()
    res = solve(dist, config, seed=args.seed, tol=args.tol, cert_tol=args.cert_tol,
                max_steps=args.max_steps, warn=False)
    wall = time.perf_counter() - t0
    arrays = dict(W=res.W, H=res.H, b=res.b, objective=res.objective, grad_norm=res.grad_norm,
                  residual=res.residual, certificate=res.certificate, converged=res.converged,
                  certified=res.certified, status=res.status, steps=res.steps,
                  label_sets=dist.label_sets, weights=dist.weights)
    meta = run_metadata(command="solve", config=config.as_dict(), seed=args.seed, tol=args.tol,
                        cert_tol=args.cert_tol, labels=str(args.labels), label_sets=dist.sets,
                        num_classes=dist.num_classes, wall_time_s=wall,
                        objective=float(res.objective), grad_norm=float(res.grad_norm),
                        residual=float(res.residual), certificate=float(res.certificate),
                        converged=bool(res.converged), certified=bool(res.certified),
                        status=str(res.status), reason=str(res.reason),
                        global_optimum=bool(res.certified))
    write_npz_atomic(out, arrays, meta)
    what = "certified global optimum" if res.certified else f"{res.status} ({res.reason})"
    print(f"{what}: F = {float(res.objective):.12g}, residual = {float(res.residual):.1e}, "
          f"rho = {float(res.certificate):.9f}, {int(res.steps)} Newton steps, {wall:.2f} s -> {out}")
    if res.certified or args.allow_uncertified:
        return 0
    print(f"mlnc-jax: not certified ({res.status}): {res.reason}; the result is written with "
          "its status; --allow-uncertified accepts it", file=sys.stderr)
    return 1


def _cmd_closed_form(args):
    from .closed_forms import closed_form
    from .results_io import run_metadata, write_npz_atomic
    out = _check_out(args.out)
    dist = load_labels(args.labels)
    config = _config(args, dim=args.dim or dist.num_classes)
    t0 = time.perf_counter()
    cf = closed_form(dist, config)
    arrays = dict(gram_W=cf.gram_W, gram_H=cf.gram_H, logits=cf.logits, b=cf.b,
                  objective=cf.objective, rank=cf.rank, W=cf.params.W, H=cf.params.H,
                  eigenvalues=cf.eigenvalues, label_sets=dist.label_sets, weights=dist.weights)
    meta = run_metadata(command="closed-form", config=config.as_dict(), labels=str(args.labels),
                        label_sets=dist.sets, num_classes=dist.num_classes,
                        wall_time_s=time.perf_counter() - t0, objective=float(cf.objective),
                        rank=int(cf.rank))
    write_npz_atomic(out, arrays, meta)
    print(f"closed form ({config.loss_record.name}): F* = {float(cf.objective):.12g}, rank {int(cf.rank)} -> {out}")
    return 0


def _cmd_compare(args):
    from .report import compare_losses, default_distribution, format_compare_table
    from .plotting import compare_figure

    fig_path = Path(args.figure)
    if fig_path.suffix not in (".png", ".pdf", ".svg"):
        raise InputError(f"--figure must end in .png, .pdf or .svg: {args.figure}")
    if not fig_path.parent.exists():
        raise InputError(f"figure directory does not exist: {fig_path.parent}")
    dist = load_labels(args.labels) if args.labels else default_distribution()
    report = compare_losses(dist, dim=args.dim, lambda_w=args.lambda_w, lambda_h=args.lambda_h,
                            seed=args.seed)
    print(format_compare_table(report))
    compare_figure(report, fig_path)
    print(f"figure -> {fig_path}")
    return 0


def _cmd_spectrum(args):
    import json

    from .spectra import format_spectrum_table, label_spectrum, spectrum_to_json

    spec = label_spectrum(load_labels(args.labels))
    if args.json:
        print(json.dumps(spectrum_to_json(spec), allow_nan=False))
    else:
        print(format_spectrum_table(spec))
    return 0


def main(argv=None) -> int:
    import jax

    # the command line is a float64 application: every result file says dtype float64
    jax.config.update("jax_enable_x64", True)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except InputError as e:
        msg = str(e)
        print(msg if msg.startswith("mlnc-jax") else f"mlnc-jax: error: {msg}", file=sys.stderr)
        return 2
    except SolverDivergedError as e:
        print(f"mlnc-jax: solver error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mlnc-jax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
