"""mlnc_jax: neural collapse in multi-label learning, in JAX.

Exact UFM solvers, the spectral closed forms of THEORY §4-§5 and the global-optimality
certificate of §3. Solves run in float64 inside a scoped `jax.enable_x64`; importing or
calling the package leaves the caller's JAX configuration as it was.
"""

from ._version import __version__ as __version__
from .analysis.compare import Comparison, compare, procrustes, relative_error
from .analysis.geometry import (
                           GeometryStability,
                           centred_singular_values,
                           contrast_separation,
                           geometry_stability,
)
from .analysis.metrics import (
                           NCMetrics,
                           nc1,
                           nc2_classifier,
                           nc2_features,
                           nc3,
                           nc_metrics,
                           simplex_etf_distance,
                           tagwise_angles,
                           tagwise_residuals,
)
from .analysis.synthesis import SynthesisReport, synthesis_report
from .engine.batch import solve_batch
from .engine.certificate import certificate, gradient_matrix
from .engine.continuation import solve_path
from .engine.flow import (
                           FlowTrace,
                           estimate_step_size,
                           gradient_flow,
                           gradient_flow_batch,
)
from .engine.implicit import Optimum, optimum
from .engine.requests import BatchGrid, batch_grid
from .engine.result import STATUSES, BatchSolveResult, ConvergenceWarning, SolveResult, Status
from .engine.solve import solve
from .io.real_labels import available as real_label_tables
from .io.real_labels import load_real, real_metadata
from .model.errors import (
                           CollectiveTimeoutError,
                           InputError,
                           NotCertifiedError,
                           RankChangeError,
                           SolverDivergedError,
)
from .model.labels import (
                           LabelDistribution,
                           balanced,
                           multiclass,
                           random_correlated,
                           sample_labels,
                           singleton_imbalance,
)
from .model.losses import LOSS_ALIASES, LOSSES, Loss, bce, get_loss, mse, pal, pal_normalized, register_loss
from .model.ufm import (
                           UFMConfig,
                           UFMParams,
                           init_params,
                           logits,
                           objective,
                           per_sample_objective,
)
from .networks.lambda_fit import LambdaFit, fit_lambdas
from .networks.measurement import Measurement, measure
from .theory.closed_forms import ClosedForm, closed_form, mse_closed_form
from .theory.spectra import (
                           LabelSpectrum,
                           SpectrumArrays,
                           contrast_basis,
                           format_spectrum_table,
                           label_spectrum,
                           spectrum_arrays,
                           spectrum_to_json,
)
from .theory.symmetric_pal import (
                           SymmetricPAL,
                           is_symmetric,
                           symmetric_pal,
                           symmetric_pal_closed_form,
)
from .theory.thresholds import collapse_threshold

__all__ = [
    "BatchGrid", "BatchSolveResult", "ConvergenceWarning", "batch_grid", "solve_batch",
    "Comparison", "GeometryStability", "LabelSpectrum", "NCMetrics", "SpectrumArrays",
    "SymmetricPAL", "SynthesisReport", "centred_singular_values", "compare", "contrast_basis",
    "contrast_separation", "format_spectrum_table", "geometry_stability", "gradient_flow_batch",
    "is_symmetric", "label_spectrum", "load_real", "nc1", "nc2_classifier", "nc2_features", "nc3",
    "nc_metrics", "procrustes", "real_label_tables", "real_metadata", "relative_error",
    "spectrum_arrays", "spectrum_to_json", "symmetric_pal", "symmetric_pal_closed_form",
    "synthesis_report", "tagwise_angles",
    "ClosedForm", "CollectiveTimeoutError", "FlowTrace", "InputError", "LOSS_ALIASES", "LOSSES", "LabelDistribution", "Loss", "STATUSES", "Status",
    "SolveResult", "get_loss",
    "SolverDivergedError", "UFMConfig", "UFMParams", "balanced", "bce", "certificate",
    "closed_form", "collapse_threshold", "estimate_step_size", "gradient_flow",
    "gradient_matrix", "init_params", "logits", "mse", "mse_closed_form", "objective",
    "multiclass", "pal", "pal_normalized", "per_sample_objective", "register_loss", "random_correlated", "sample_labels",
    "singleton_imbalance", "solve", "solve_path",
    "NotCertifiedError", "Optimum", "RankChangeError", "optimum", "simplex_etf_distance",
    "tagwise_residuals", "measure", "Measurement", "fit_lambdas", "LambdaFit",
]
