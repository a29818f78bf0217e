"""Experiments that test the claims of arXiv 2605.01897: one module per figure.

`python -m experiments [--quick] [--only NAME ...]` computes `results/NAME.npz` +
`results/NAME.json` and plots `figures/NAME.png` / `.pdf` from those files only.
"""

FIGURES = (
    "convergence",
    "synthesis_vs_imbalance",
    "kappa_stability",
    "kappa_bound",
    "literature",
    "phase_diagram",
    "real_labels",
    "symmetric_pal",
    "network_vs_ufm",
    "sensitivity",
    "inverse_design",
)
