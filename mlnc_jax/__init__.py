"""mlnc_jax: neural collapse in multi-label learning, in JAX.

Exact UFM solvers, the spectral closed forms of THEORY §4-§5 and the global-optimality
certificate of §3. float64 is switched on by `solve` and the CLI, never on import.
"""

from .certificate import certificate, collapse_threshold, gradient_matrix
from .closed_forms import ClosedForm, closed_form, mse_closed_form
from .errors import InputError, SolverDivergedError
from .labels import (LabelDistribution, balanced, random_correlated, sample_labels,
                     singleton_imbalance)
from .losses import LOSSES, bce, mse, pal, pal_normalized
from .solvers import (FlowTrace, SolveResult, enable_x64, estimate_step_size, gradient_flow,
                      lbfgs, solve)
from .ufm import UFMConfig, UFMParams, init_params, logits, objective, per_sample_objective

__version__ = "0.1.0"

__all__ = [
    "ClosedForm", "FlowTrace", "InputError", "LOSSES", "LabelDistribution", "SolveResult",
    "SolverDivergedError", "UFMConfig", "UFMParams", "balanced", "bce", "certificate",
    "closed_form", "collapse_threshold", "enable_x64", "estimate_step_size", "gradient_flow",
    "gradient_matrix", "init_params", "lbfgs", "logits", "mse", "mse_closed_form", "objective",
    "pal", "pal_normalized", "per_sample_objective", "random_correlated", "sample_labels",
    "singleton_imbalance", "solve",
]
