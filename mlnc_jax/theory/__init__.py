"""Closed forms of THEORY: the label spectrum (§1, `spectra`), collapse thresholds (§3,
`thresholds`), the MSE optimum (§4, `closed_forms`) and the symmetric PAL optimum (§5,
`symmetric_pal`). Exact formulas, no iterative solver."""
