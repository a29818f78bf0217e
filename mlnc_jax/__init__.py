"""mlnc_jax: neural collapse in multi-label learning, in JAX.

Exact UFM solvers, the spectral closed forms of THEORY §4-§5 and the global-optimality
certificate of §3. Solves run in float64 inside a scoped `jax.enable_x64`; importing or
calling the package leaves the caller's JAX configuration as it was.
"""

from .certificate import certificate, collapse_threshold, gradient_matrix
from .closed_forms import ClosedForm, closed_form, mse_closed_form
from .errors import CollectiveTimeoutError, InputError, NotCertifiedError, RankChangeError, SolverDivergedError
from .labels import (LabelDistribution, balanced, random_correlated, sample_labels,
                     singleton_imbalance)
from .losses import LOSSES, Loss, bce, get_loss, mse, pal, pal_normalized
from .flow import FlowTrace, estimate_step_size, gradient_flow, gradient_flow_batch
from .solver import (STATUSES, BatchGrid, BatchSolveResult, ConvergenceWarning, SolveResult,
                    batch_grid, solve, solve_batch)
from .ufm import UFMConfig, UFMParams, init_params, logits, objective, per_sample_objective
from .compare import Comparison, compare, procrustes, relative_error
from .spectra import (LabelSpectrum, SpectrumArrays, contrast_basis, format_spectrum_table,
                      label_spectrum, spectrum_arrays, spectrum_to_json)
from .symmetric_pal import SymmetricPAL, is_symmetric, symmetric_pal, symmetric_pal_closed_form
from .synthesis import SynthesisReport, synthesis_report
from .geometry import (GeometryStability, centred_singular_values, contrast_separation,
                       geometry_stability)
from .metrics import (NCMetrics, nc1, nc2_classifier, nc2_features, nc3, nc_metrics,
                      tagwise_angles)
from .implicit import Optimum, optimum, simplex_etf_distance, tagwise_residuals
from .real_labels import available as real_label_tables, load_real, real_metadata

__version__ = "0.1.0"

__all__ = [
    "BatchGrid", "BatchSolveResult", "ConvergenceWarning", "batch_grid", "solve_batch",
    "Comparison", "GeometryStability", "LabelSpectrum", "NCMetrics", "SpectrumArrays",
    "SymmetricPAL", "SynthesisReport", "centred_singular_values", "compare", "contrast_basis",
    "contrast_separation", "format_spectrum_table", "geometry_stability", "gradient_flow_batch",
    "is_symmetric", "label_spectrum", "load_real", "nc1", "nc2_classifier", "nc2_features", "nc3",
    "nc_metrics", "procrustes", "real_label_tables", "real_metadata", "relative_error",
    "spectrum_arrays", "spectrum_to_json", "symmetric_pal", "symmetric_pal_closed_form",
    "synthesis_report", "tagwise_angles",
    "ClosedForm", "CollectiveTimeoutError", "FlowTrace", "InputError", "LOSSES", "LabelDistribution", "Loss", "STATUSES",
    "SolveResult", "get_loss",
    "SolverDivergedError", "UFMConfig", "UFMParams", "balanced", "bce", "certificate",
    "closed_form", "collapse_threshold", "estimate_step_size", "gradient_flow",
    "gradient_matrix", "init_params", "logits", "mse", "mse_closed_form", "objective",
    "pal", "pal_normalized", "per_sample_objective", "random_correlated", "sample_labels",
    "singleton_imbalance", "solve",
    "NotCertifiedError", "Optimum", "RankChangeError", "optimum", "simplex_etf_distance",
    "tagwise_residuals",
]
