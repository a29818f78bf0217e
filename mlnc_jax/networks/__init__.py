"""Real networks against the UFM: train an MLP on real inputs (`training`) and compare the
geometry of its last layer with the certified UFM optimum of its label distribution
(`comparison`); any network's arrays or files, end to end (`measurement`, with the λ fit of
`lambda_fit` and the streamed summaries of `statistics`). Shipped input features are read
by `io.features`."""

from ..io.features import feature_datasets, load_features
from .comparison import (
                       NetComparison,
                       compare_network,
                       label_set_means,
                       network_comparison,
                       sample_set_index,
)
from .lambda_fit import LambdaFit, balance_ratio, fit_lambdas
from .measurement import Measurement, measure
from .statistics import SampleStatistics, distribution_and_index, sample_statistics
from .training import (
                       ACTIVATIONS,
                       MLPConfig,
                       NetParams,
                       TrainConfig,
                       TrainResult,
                       TrainTrace,
                       adam_step,
                       features,
                       init_network,
                       log_points,
                       network_objective,
                       standardize,
                       subsample,
                       train,
)

__all__ = [
    "ACTIVATIONS", "MLPConfig", "NetParams", "TrainConfig", "TrainTrace", "TrainResult",
    "NetComparison", "feature_datasets", "load_features", "standardize", "init_network",
    "subsample", "features", "network_objective", "adam_step", "train", "log_points",
    "sample_set_index", "label_set_means", "compare_network", "network_comparison",
    "SampleStatistics", "sample_statistics", "distribution_and_index", "LambdaFit",
    "fit_lambdas", "balance_ratio", "Measurement", "measure",
]
