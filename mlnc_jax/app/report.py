"""The main job: solve all four losses on one distribution and set them against the MSE
closed form (THEORY §4, §7) and the synthesis rules (§4, §6).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ..analysis.compare import Comparison, compare, relative_error
from ..analysis.geometry import GeometryStability, geometry_stability
from ..analysis.metrics import NCMetrics, nc_metrics
from ..analysis.synthesis import synthesis_report
from ..engine.result import SolveResult
from ..engine.solve import solve
from ..model.budget import check_memory, estimate_solve_bytes
from ..model.checks import check_has_labels, check_min_classes
from ..model.labels import LabelDistribution, singleton_imbalance
from ..model.losses import LOSSES
from ..model.ufm import UFMConfig
from ..theory.closed_forms import ClosedForm, mse_closed_form
from ..theory.spectra import LabelSpectrum, label_spectrum

__all__ = ["default_distribution", "LossReport", "CompareReport", "compare_losses",
           "format_compare_table", "normalized_gram_error"]



def default_distribution() -> LabelDistribution:
    """Embedded example: K = 6, long-tailed singletons (class k weighs 10^{-k/5}, max/min
    = 10), π(1) = 0.7, every pair equally likely with π(2) = 0.3."""
    return singleton_imbalance(6, 10.0, kind="exponential", multiplicity_mass={1: 0.7, 2: 0.3})


class LossReport(NamedTuple):
    loss: str
    result: SolveResult
    vs_mse: Comparison
    shape_gram_H: float  # error of H Hᵀ/‖H Hᵀ‖ against the MSE closed form's
    tagwise_residual: float  # max over |S| ≥ 2 (NaN if not evaluable)
    freefit_residual: float
    frequency_rule_residual: float
    nc: NCMetrics
    geometry: GeometryStability


class CompareReport(NamedTuple):
    dist: LabelDistribution
    spectrum: LabelSpectrum
    closed_form: ClosedForm
    losses: tuple
    lambda_w: float
    lambda_h: float
    dim: int


def normalized_gram_error(H, H_ref) -> float:
    """Shape error `‖G/‖G‖ − G_ref/‖G_ref‖‖_F` of prototype Grams (scale removed)."""
    G = np.asarray(H) @ np.asarray(H).T
    Gr = np.asarray(H_ref) @ np.asarray(H_ref).T
    n, nr = np.linalg.norm(G), np.linalg.norm(Gr)
    if n == 0 or nr == 0:
        return float("nan")
    return relative_error(G / n, Gr / nr)


def _synthesis_residuals(H, dist):
    rep = synthesis_report(np.asarray(H), dist)
    return rep.summary["tagwise_max"], rep.summary["freefit_max"], rep.summary["frequency_rule_max"]


def compare_losses(dist: LabelDistribution, *, dim=None, lambda_w=5e-3, lambda_h=5e-3, seed=0,
                   tol=1e-10, losses=None) -> CompareReport:
    # the contrast geometry of the report needs two classes and at least one label
    check_min_classes(dist, 2, "compare")
    check_has_labels(dist, "compare")
    dim = dim or dist.num_classes
    check_memory(estimate_solve_bytes(dist.num_classes, dist.num_sets, dim), f"compare with dim = {dim}")
    cf = mse_closed_form(dist, UFMConfig("mse", dim, lambda_w, lambda_h))
    out = []
    for loss in tuple(LOSSES) if losses is None else losses:
        res = solve(dist, UFMConfig(loss, dim, lambda_w, lambda_h), seed=seed, tol=tol)
        tw, ff, fr = _synthesis_residuals(res.H, dist)
        nc = NCMetrics(*(float(v) for v in nc_metrics(res.W, res.H, jnp.asarray(dist.label_sets),
                                                      jnp.asarray(dist.weights))))
        geo = geometry_stability(res.W, res.H, res.b, dist)
        out.append(LossReport(loss, res, compare(res, cf), normalized_gram_error(res.H, cf.params.H),
                              tw, ff, fr, nc, geo))
    return CompareReport(dist, label_spectrum(dist), cf, tuple(out), lambda_w, lambda_h, dim)


_LEGEND = (
    "Gram W / Gram H / logits: relative Frobenius error to the MSE closed form (THEORY §4);",
    "shape H: the same for H Hᵀ with scale removed. status: 'certified' = a global optimum by",
    "the certificate of §3 at a converged point (THEORY §2c; rho-1 is that certificate).",
    "tag-wise / freq-rule / free-fit: largest relative residual",
    "over sets with |S| >= 2 of tag-wise averaging, the frequency-weighted rule (§4) and the",
    "free fit in span{h_k, k in S} + {sum_j p_j h_j} (§6). NC2/NC3: distance to the simplex",
    "ETF / self-duality (Li et al. 2024); angle: largest tag-wise angle; sigma_m: weakest contrast",
    "variance of the logits within multiplicity m, set against kappa_m; s_min(Hc): smallest",
    "non-zero singular value of the centred prototypes.",
)


def _setup_lines(rep: CompareReport) -> list:
    d = rep.dist
    return [
        f"label distribution: K = {d.num_classes}, {d.num_sets} label sets, "
        f"p = [{', '.join(f'{x:.3f}' for x in d.class_frequencies)}]",
        f"UFM: d = {rep.dim}, lambda_W = {rep.lambda_w:g}, lambda_H = {rep.lambda_h:g}, free bias;"
        f" MSE closed form F* = {rep.closed_form.objective:.10g}, rank {rep.closed_form.rank}",
    ]


def _solve_table(rep: CompareReport) -> list:
    """Certificate and errors to the MSE closed form (§4) and synthesis residuals, per loss."""
    lines = [
        f"{'loss':<15}{'status':>10}{'objective':>14}{'||grad F||':>12}{'rho-1':>11}{'Gram W':>10}"
        f"{'Gram H':>10}{'logits':>10}{'shape H':>10}{'tag-wise':>10}{'freq-rule':>10}{'free-fit':>10}",
    ]
    for r in rep.losses:
        res = r.result
        lines.append(
            f"{r.loss:<15}{'certified' if res.certified else 'NOT cert.':>10}"
            f"{float(res.objective):>14.8f}{float(res.grad_norm):>12.1e}"
            f"{float(res.certificate) - 1:>11.1e}{r.vs_mse.gram_W:>10.1e}{r.vs_mse.gram_H:>10.1e}"
            f"{r.vs_mse.logits:>10.1e}{r.shape_gram_H:>10.1e}{r.tagwise_residual:>10.1e}"
            f"{r.frequency_rule_residual:>10.1e}{r.freefit_residual:>10.1e}")
    return lines


def _spectrum_lines(rep: CompareReport, ms: list) -> list:
    """The label spectrum (§1) and the collapse thresholds (§3)."""
    sp = rep.spectrum
    return [
        "label spectrum (THEORY §1): " + ", ".join(
            f"kappa_{m} = {sp.kappa[m]:.4g}" for m in ms) + f", kappa = {sp.kappa_all:.4g}; "
        + ", ".join(f"delta_{m} = " + ("-" if sp.isotropy_defect[m] is None or not np.isfinite(sp.isotropy_defect[m])
                                       else f"{sp.isotropy_defect[m]:.3g}") for m in ms),
        "collapse thresholds (§3): " + ", ".join(f"{k} {v:.4g}" for k, v in sp.collapse_threshold.items())
        + f"  (lambda_W*lambda_H = {rep.lambda_w * rep.lambda_h:.3g})",
    ]


def _geometry_table(rep: CompareReport, ms: list) -> list:
    """Neural-collapse metrics and contrast separation against `kappa_m`, per loss."""
    lines = [
        f"{'loss':<15}{'NC2(W)':>9}{'NC2(H)':>9}{'NC3':>9}{'angle max':>11}"
        + "".join(f"{'sigma_' + str(m):>10}{'/kappa_' + str(m):>10}" for m in ms)
        + f"{'s_min(Hc)':>11}"]
    for r in rep.losses:
        g = r.geometry
        lines.append(
            f"{r.loss:<15}{r.nc.nc2_W:>9.3f}{r.nc.nc2_H:>9.3f}{r.nc.nc3:>9.3f}"
            f"{np.degrees(r.nc.tagwise_angle_max):>10.2f}°"
            + "".join(f"{g.contrast_separation.get(m, np.nan):>10.3g}{g.ratio.get(m, np.nan):>10.3g}" for m in ms)
            + f"{g.smallest_singular_value:>11.3g}")
    return lines


def format_compare_table(rep: CompareReport) -> str:
    ms = list(rep.spectrum.multiplicities)
    return "\n".join([*_setup_lines(rep), "", *_solve_table(rep), "", *_spectrum_lines(rep, ms),
                      "", *_geometry_table(rep, ms), "", *_LEGEND])
