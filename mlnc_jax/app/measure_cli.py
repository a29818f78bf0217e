"""`mlnc-jax measure`: a trained network's last layer from files against the certified UFM
optimum of its labels (`mlnc_jax.measure`), written as one JSON report (and a figure).

    mlnc-jax measure --features H.npy --labels Y.npy --classifier W.npy [--bias b.npy]
                     --loss pal [--lambda-w LW --lambda-h LH] --out report.json [--figure f.png]

Each array is `PATH` or `PATH:KEY` (`.npy`, `.npz`, `.safetensors`; `io.arrays`). λ's not
given are fitted to the network's geometry. Exit 0 for a certified comparison, 1 when the
UFM optimum is not certified (the report is written and says so), 2 on bad input.
"""

from __future__ import annotations

import math

import numpy as np

from ..io.arrays import open_array
from ..io.results import jsonable, run_metadata, write_json_atomic
from ..model.errors import InputError
from .outputs import check_figure, check_out

__all__ = ["measure_command", "measurement_report", "GRAM_ROWS_MAX"]

GRAM_ROWS_MAX = 256  # label-set Grams are written into the report (for its figure) up to this T


def _fit_json(fit) -> dict | None:
    if fit is None:
        return None
    return {"lambda_w": fit.lambda_w, "lambda_h": fit.lambda_h, "distance": fit.distance,
            "log_std": fit.log_std, "relative_std": np.expm1(fit.log_std),
            "curvature": fit.curvature, "start": [fit.start_lambda_w, fit.start_lambda_h],
            "start_distance": fit.start_distance, "balance": fit.balance, "steps": fit.steps,
            "converged": fit.converged}


def measurement_report(m, inputs: dict, **meta) -> dict:
    """The JSON report of a `Measurement` (`inputs`: names of the arrays read)."""
    u, c, dist = m.ufm, m.comparison, m.distribution
    T = dist.num_sets
    rep = {"metadata": run_metadata(command="measure", config=m.config.as_dict(),
                                    wall_time_s=m.seconds, **meta),
           "inputs": {**inputs, "num_samples": m.statistics.num_samples,
                      "dim": int(m.statistics.means.shape[1]), "num_classes": dist.num_classes,
                      "num_sets": T},
           "lambdas": {"lambda_w": m.config.lambda_w, "lambda_h": m.config.lambda_h,
                       "fitted": m.fit is not None},
           "fit": _fit_json(m.fit), "balance": m.balance,
           "ufm": {"status": str(u.status), "certified": bool(u.certified),
                   "objective": float(u.objective), "certificate": float(u.certificate),
                   "residual": float(u.residual), "steps": int(u.steps), "dim": m.config.dim},
           "comparison": {**c._asdict(), "objective_gap": c.net_objective - c.ufm_objective},
           "metrics": m.metrics, "worst_sets": m.worst_sets,
           "per_set": {"labels": dist.sets, **m.per_set}}
    if T <= GRAM_ROWS_MAX:
        H = np.asarray(u.H)
        rep["grams"] = {"network_means": m.statistics.means @ m.statistics.means.T,
                        "ufm": H @ H.T}
    return jsonable(rep)


def _read(args):
    feats = open_array(args.features, "features")
    labels = open_array(args.labels, "labels").read()
    W = open_array(args.classifier, "classifier").read()
    b = None if args.bias is None else open_array(args.bias, "bias").read()
    if args.lambda_b and args.bias is None:
        raise InputError("--lambda-b needs --bias (a network without a bias has none to decay)")
    return feats, labels, W, b


def _summary(rep: dict) -> str:
    lam, fit, cmp = rep["lambdas"], rep["fit"], rep["comparison"]
    how = "given"
    if fit:
        rs = fit["relative_std"]
        how = (f"fitted, relative std {rs[0]:.2g} / {rs[1]:.2g}, remaining distance "
               f"{fit['distance']:.3g}")
    worst = ", ".join(f"{w['labels']} ({w['samples']} samples, {w['gram_row_error']:.2g})"
                      for w in rep["worst_sets"][:3])
    return (f"UFM {rep['ufm']['status']} at λ_W = {lam['lambda_w']:.6g}, λ_H = {lam['lambda_h']:.6g} "
            f"({how})\nlabel-set-mean Gram error {cmp['gram_h_error']:.3g} (scale-free "
            f"{cmp['gram_h_error_scaled']:.3g}), W Wᵀ {cmp['gram_w_error']:.3g}, logits "
            f"{cmp['logit_error']:.3g}, F_net − F* = {cmp['objective_gap']:.3g}, "
            f"tr Σ_W / tr Σ_B = {cmp['within_ratio']:.3g}\nworst-placed label sets: {worst}")


def measure_command(args) -> int:
    from ..networks.measurement import measure

    inputs = [(f, getattr(args, f.lstrip("-").replace("-", "_"))) for f in
              ("--features", "--labels", "--classifier", "--bias")]
    out = check_out(args.out, inputs, suffix=".json", sidecar=False)
    fig = None if args.figure is None else check_figure(args.figure, inputs)
    feats, labels, W, b = _read(args)
    m = measure(feats, labels, W, b, lambda_w=args.lambda_w, lambda_h=args.lambda_h,
                loss=args.loss, lambda_b=args.lambda_b, seed=args.seed, tol=args.tol,
                chunk_rows=args.chunk_rows)
    rep = measurement_report(m, {f.lstrip("-"): v for f, v in inputs},
                             seed=args.seed, tol=args.tol, features_dtype=str(feats.dtype))
    write_json_atomic(out, rep)
    print(_summary(rep), flush=True)
    print(f"report -> {out}")
    if fig is not None:
        from .plotting import measure_figure

        measure_figure(rep, fig)
        print(f"figure -> {fig}")
    if not rep["ufm"]["certified"]:
        print(f"mlnc-jax: the UFM optimum is {rep['ufm']['status']}, not certified: the "
              "report says so", flush=True)
        return 1
    return 0 if math.isfinite(rep["comparison"]["gram_h_error"]) else 1
