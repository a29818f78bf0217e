"""Label spectra of a distribution (THEORY §1) and its collapse thresholds (THEORY §3).

For a label distribution with multi-hot rows `y_s` and weights `π_s`:

- class frequencies `p = Σ_s π_s y_s`, mean multiplicity `m̄ = 1ᵀp`;
- second moment `M = Σ_s π_s y_s y_sᵀ`, centred covariance `C = M − p pᵀ`;
- per multiplicity `m`: mass `π(m) = Σ_{|S|=m} π_s`, conditional moments
  `p_m = Σ_{|S|=m} π_s y_s / π(m)`, `M_m = Σ_{|S|=m} π_s y_s y_sᵀ / π(m)`,
  `C_m = M_m − p_m p_mᵀ` (`C_m 1 = 0`: it lives on contrasts);
- spectra: the `K−1` eigenvalues of `Qᵀ C_m Q` and `Qᵀ C Q`, `Q` an orthonormal basis of
  `1^⊥` (the Helmert basis, `contrast_basis`);
- `κ_m = λ_min(C_m|_{1^⊥})`, `κ = λ_min(C|_{1^⊥})` (`kappa_all`): the weakest centred
  inter-class contrast;
- isotropy defect `δ_m = ‖C_m − (tr C_m/(K−1)) P‖_F / ‖C_m‖_F`, `P = I − 11ᵀ/K`;
  "absent" (NaN in arrays, None on the host side) when `C_m = 0`, which happens exactly when
  the multiplicity-m slice holds a single label set (e.g. `m = K` or `m = 0`).

Check value (§1): all m-subsets equally likely give `C_m = m(K−m)/(K(K−1))·P`, so
`κ_m = m(K−m)/(K(K−1))` and `δ_m = 0`.

`spectrum_arrays(label_sets, weights)` is a pure function (jax.numpy for jax arrays, numpy
for numpy arrays): it jits and vmaps over a batch of distributions padded with zero-weight
rows; multiplicities are indexed statically by
`m = 0..K` (absent ones masked with NaN). `label_spectrum(dist)` gives the host-side
(numpy, float64) summary with only the multiplicities present, plus the collapse thresholds
of §3 from `thresholds.collapse_threshold`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..model.budget import check_memory, estimate_spectrum_bytes
from ..model.checks import check_has_labels
from ..model.errors import InputError
from ..model.labels import LabelDistribution
from ..model.losses import LOSSES, get_loss
from .thresholds import collapse_threshold

__all__ = [
    "SpectrumArrays", "LabelSpectrum", "contrast_basis", "class_frequencies",
    "second_moment", "label_covariance", "multiplicity_masses", "conditional_moments",
    "contrast_spectrum", "isotropy_defect", "spectrum_arrays", "label_spectrum",
    "spectrum_to_json", "format_spectrum_table", "THRESHOLD_LOSSES",
]

THRESHOLD_LOSSES = tuple(LOSSES)


# -- array level (jit / vmap) ------------------------------------------------------------


def contrast_basis(num_classes: int) -> np.ndarray:
    """Orthonormal basis `Q [K, K−1]` of `1^⊥` (Helmert): column `j` (1-based) is
    `(1, …, 1, −j, 0, …, 0)/√(j(j+1))` with `j` ones; `Q Qᵀ = P = I − 11ᵀ/K` (THEORY §1)."""
    K = int(num_classes)
    Q = np.zeros((K, max(K - 1, 0)))
    for j in range(1, K):
        Q[:j, j - 1] = 1.0
        Q[j, j - 1] = -float(j)
        Q[:, j - 1] /= math.sqrt(j * (j + 1))
    return Q


def class_frequencies(label_sets, weights):
    """`p = Σ_s π_s y_s` (THEORY §1)."""
    return weights @ label_sets


def second_moment(label_sets, weights):
    """`M = Σ_s π_s y_s y_sᵀ` (THEORY §1)."""
    return (label_sets * weights[:, None]).T @ label_sets


def label_covariance(label_sets, weights):
    """Centred label covariance `C = M − p pᵀ` (THEORY §1)."""
    p = class_frequencies(label_sets, weights)
    return second_moment(label_sets, weights) - p[:, None] * p[None, :]


def array_module(*arrays):
    """numpy for numpy inputs (host side, no JIT), jax.numpy otherwise."""
    return np if all(isinstance(a, np.ndarray) for a in arrays) else jnp


def multiplicity_onehot(label_sets, weights):
    """`[T, K+1]` indicator of `|S_s| = m` for rows with `π_s > 0` (padding rows masked)."""
    xp = array_module(label_sets, weights)
    K = label_sets.shape[-1]
    m = xp.round(xp.sum(label_sets, axis=-1))
    onehot = (m[:, None] == xp.arange(K + 1, dtype=label_sets.dtype)[None, :])
    return onehot.astype(label_sets.dtype) * (weights > 0).astype(label_sets.dtype)[:, None]


def multiplicity_masses(label_sets, weights):
    """`π(m) = Σ_{|S|=m} π_s` for `m = 0..K`, `[K+1]` (THEORY §1)."""
    return weights @ multiplicity_onehot(label_sets, weights)


def conditional_moments(label_sets, weights, multiplicities=None):
    """Per-multiplicity conditional moments `(p_m [K+1, K], M_m [K+1, K, K], C_m [K+1, K, K])`
    with `p_m = Σ_{|S|=m} π_s y_s / π(m)`, `M_m = Σ_{|S|=m} π_s y_s y_sᵀ / π(m)`,
    `C_m = M_m − p_m p_mᵀ` (THEORY §1). Rows of absent multiplicities (`π(m) = 0`) are zero.

    `multiplicities` (numpy inputs only): compute just these rows, in this order (leading
    axis `len(multiplicities)`), each from its own label sets: `O(T·K²)` work and
    `O(len·K²)` memory in all, so K ≈ 1,000 label spaces fit.
    """
    xp = array_module(label_sets, weights)
    E = multiplicity_onehot(label_sets, weights)               # [T, K+1]
    wm = E * weights[:, None]                                   # π_s [|S_s| = m]
    mass = xp.sum(wm, axis=0)                                   # [K+1]
    inv = xp.where(mass > 0, 1.0 / xp.where(mass > 0, mass, 1.0), 0.0)
    if multiplicities is not None:
        if xp is not np:
            raise InputError("conditional_moments(multiplicities=...) takes numpy arrays")
        K = label_sets.shape[-1]
        ms = [int(m) for m in multiplicities]
        pm, Mm = np.zeros((len(ms), K)), np.zeros((len(ms), K, K))
        for i, m in enumerate(ms):
            rows = E[:, m] > 0
            Ym, w = label_sets[rows], wm[rows, m]
            pm[i] = (w @ Ym) * inv[m]
            Mm[i] = ((Ym * w[:, None]).T @ Ym) * inv[m]
    else:
        pm = (wm.T @ label_sets) * inv[:, None]
        Mm = xp.einsum("sm,sk,sl->mkl", wm, label_sets, label_sets) * inv[:, None, None]
    Cm = Mm - pm[:, :, None] * pm[:, None, :]
    return pm, Mm, Cm


def contrast_spectrum(C):
    """Ascending eigenvalues of `C` restricted to `1^⊥`: `eigvalsh(Qᵀ C Q)`, `K−1` values
    (THEORY §1); batched over leading axes of `C [..., K, K]`. A covariance is PSD, so
    rounding negatives (~1e-17) are clipped to 0."""
    xp = array_module(C)
    Q = xp.asarray(contrast_basis(C.shape[-1]), dtype=C.dtype)
    R = xp.swapaxes(Q, 0, 1) @ C @ Q
    return xp.maximum(xp.linalg.eigvalsh(0.5 * (R + xp.swapaxes(R, -1, -2))), 0.0)


def isotropy_defect(C):
    """`δ = ‖C − (tr C/(K−1)) P‖_F / ‖C‖_F` (THEORY §1), NaN where `C = 0`; batched over
    leading axes of `C [..., K, K]`."""
    xp = array_module(C)
    K = C.shape[-1]
    P = xp.eye(K, dtype=C.dtype) - 1.0 / K
    tr = xp.trace(C, axis1=-2, axis2=-1)[..., None, None]
    num = xp.linalg.norm(C - tr / (K - 1) * P, axis=(-2, -1))
    den = xp.linalg.norm(C, axis=(-2, -1))
    return xp.where(den > 0, num / xp.where(den > 0, den, 1.0), xp.nan)


class SpectrumArrays(NamedTuple):
    """Array-level label spectra (THEORY §1); per-multiplicity rows indexed by `m = 0..K`.

    `multiplicity_count[m]` is the number of label sets with `|S| = m` and `π_s > 0`.
    Absent multiplicities (`π(m) = 0`) have NaN `spectrum`, `kappa` and `isotropy_defect`
    rows (zero moments); `isotropy_defect[m]` is also NaN when `C_m = 0` (a single set).
    With `spectrum_arrays(..., multiplicities=ms)` the per-multiplicity rows are those of
    `ms`, in order (`multiplicity_mass` and `multiplicity_count` stay `[K+1]`).
    """

    class_frequencies: jax.Array          # [K]        p
    mean_multiplicity: jax.Array          # []         m̄ = 1ᵀp
    second_moment: jax.Array              # [K, K]     M
    covariance: jax.Array                 # [K, K]     C
    multiplicity_mass: jax.Array          # [K+1]      π(m)
    multiplicity_count: jax.Array         # [K+1]
    conditional_frequencies: jax.Array    # [K+1, K]   p_m
    conditional_second_moment: jax.Array  # [K+1, K, K] M_m
    conditional_covariance: jax.Array     # [K+1, K, K] C_m
    spectrum: jax.Array                   # [K+1, K−1] eig(C_m|1⊥), ascending
    spectrum_all: jax.Array               # [K−1]      eig(C|1⊥), ascending
    kappa: jax.Array                      # [K+1]      κ_m
    kappa_all: jax.Array                  # []         κ
    isotropy_defect: jax.Array            # [K+1]      δ_m


def spectrum_arrays(label_sets, weights, multiplicities=None) -> SpectrumArrays:
    """All label spectra of THEORY §1 from `label_sets [T, K]`, `weights [T]`.

    Pure: with jax arrays (or under `jit`/`vmap`) it is computed with `jax.numpy`; with
    numpy arrays it runs in numpy (host side, no compilation). Needs `K ≥ 2` (statically).
    Zero-weight padding rows drop out, so it vmaps over a batch of distributions padded to a
    common `T`. `multiplicities` (numpy only, see `conditional_moments`): the per-multiplicity
    fields hold just these rows, in this order.
    """
    xp = array_module(label_sets, weights)
    label_sets = xp.asarray(label_sets)
    weights = xp.asarray(weights, dtype=label_sets.dtype)
    if label_sets.shape[-1] < 2:
        raise InputError("label spectra need at least K = 2 classes")
    p = class_frequencies(label_sets, weights)
    M = second_moment(label_sets, weights)
    C = M - p[:, None] * p[None, :]
    E = multiplicity_onehot(label_sets, weights)
    mass = weights @ E
    count = xp.sum(E, axis=0).astype(xp.int32)
    pm, Mm, Cm = conditional_moments(label_sets, weights, multiplicities)
    present, count_m = mass > 0, count
    if multiplicities is not None:
        idx = np.asarray([int(m) for m in multiplicities], dtype=int)
        present, count_m = present[idx], count[idx]
    spec = xp.where(present[:, None], contrast_spectrum(Cm), xp.nan)
    spec_all = contrast_spectrum(C)
    delta = xp.where(present & (count_m > 1), isotropy_defect(Cm), xp.nan)
    return SpectrumArrays(p, xp.sum(p), M, C, mass, count, pm, Mm, Cm, spec, spec_all,
                          spec[:, 0], spec_all[0], delta)


# -- host side ----------------------------------------------------------------------------


class LabelSpectrum(NamedTuple):
    """Host-side (numpy float64) label spectra of THEORY §1 and the collapse thresholds of §3.

    Per-multiplicity entries are dicts keyed by the multiplicities present (`π(m) > 0`),
    ascending. `isotropy_defect[m]` is None when `C_m = 0` (a single label set of size m).
    `collapse_threshold[loss]` is `λ_max(Σ_s π_s g⁰_s g⁰_sᵀ)` (§3; `W = 0` is optimal iff
    `λ_W λ_H ≥` it, free bias); None for `pal_normalized` when the empty set is present.
    """

    num_classes: int
    class_frequencies: np.ndarray
    mean_multiplicity: float
    second_moment: np.ndarray
    covariance: np.ndarray
    multiplicities: tuple
    multiplicity_mass: dict
    multiplicity_count: dict
    conditional_frequencies: dict
    conditional_covariance: dict
    spectrum: dict
    spectrum_all: np.ndarray
    kappa: dict
    kappa_all: float
    isotropy_defect: dict
    collapse_threshold: dict


def _support_only(dist: LabelDistribution) -> LabelDistribution:
    w = np.asarray(dist.weights, dtype=np.float64)
    keep = w > 0
    if keep.all():
        return dist
    return LabelDistribution(np.asarray(dist.label_sets, dtype=np.float64)[keep], w[keep],
                             dist.num_classes)


def label_spectrum(dist: LabelDistribution) -> LabelSpectrum:
    """Everything of THEORY §1 plus the §3 collapse thresholds of all four losses, as numpy
    float64 (computed in numpy: no JIT, no change of JAX settings)."""
    if not isinstance(dist, LabelDistribution):
        raise InputError(f"expected a LabelDistribution, got {type(dist).__name__}")
    if dist.num_classes < 2:
        raise InputError("label spectra need at least K = 2 classes")
    check_has_labels(dist, "label spectra")
    dist = _support_only(dist)
    Y = np.asarray(dist.label_sets, dtype=np.float64)
    w = np.asarray(dist.weights, dtype=np.float64)
    ms = tuple(int(m) for m in np.flatnonzero(multiplicity_masses(Y, w) > 0))
    check_memory(estimate_spectrum_bytes(dist.num_classes, dist.num_sets, len(ms)),
                 f"the label spectrum of K = {dist.num_classes} classes")
    a = spectrum_arrays(Y, w, multiplicities=ms)
    at = {m: i for i, m in enumerate(ms)}  # per-multiplicity rows are in the order of ms
    thresholds = {}
    for loss in THRESHOLD_LOSSES:  # None where the loss is undefined on the support
        undefined = get_loss(loss).domain_error(dist.label_sets, dist.weights)
        thresholds[loss] = None if undefined else float(collapse_threshold(dist, loss))
    delta = {m: (None if not np.isfinite(a.isotropy_defect[at[m]])
                 else float(a.isotropy_defect[at[m]])) for m in ms}
    return LabelSpectrum(
        num_classes=int(dist.num_classes),
        class_frequencies=a.class_frequencies,
        mean_multiplicity=float(a.mean_multiplicity),
        second_moment=a.second_moment,
        covariance=a.covariance,
        multiplicities=ms,
        multiplicity_mass={m: float(a.multiplicity_mass[m]) for m in ms},
        multiplicity_count={m: int(a.multiplicity_count[m]) for m in ms},
        conditional_frequencies={m: a.conditional_frequencies[at[m]] for m in ms},
        conditional_covariance={m: a.conditional_covariance[at[m]] for m in ms},
        spectrum={m: a.spectrum[at[m]] for m in ms},
        spectrum_all=a.spectrum_all,
        kappa={m: float(a.kappa[at[m]]) for m in ms},
        kappa_all=float(a.kappa_all),
        isotropy_defect=delta,
        collapse_threshold=thresholds,
    )


def spectrum_to_json(spec: LabelSpectrum) -> dict:
    """JSON-ready dict: `num_classes`, `class_frequencies`, `mean_multiplicity`,
    `multiplicity_mass` ({m: π(m)}), `kappa` ({m: κ_m}), `kappa_all`, `isotropy_defect`
    ({m: δ_m}, null when absent), `spectrum` ({m: [K−1 eigenvalues, ascending]}),
    `collapse_threshold` ({loss: value}); multiplicity keys are decimal strings, only the
    multiplicities present."""
    ms = spec.multiplicities
    return {
        "num_classes": int(spec.num_classes),
        "class_frequencies": [float(x) for x in spec.class_frequencies],
        "mean_multiplicity": float(spec.mean_multiplicity),
        "multiplicity_mass": {str(m): float(spec.multiplicity_mass[m]) for m in ms},
        "kappa": {str(m): float(spec.kappa[m]) for m in ms},
        "kappa_all": float(spec.kappa_all),
        "isotropy_defect": {str(m): (None if spec.isotropy_defect[m] is None
                                     else float(spec.isotropy_defect[m])) for m in ms},
        "spectrum": {str(m): [float(x) for x in spec.spectrum[m]] for m in ms},
        "collapse_threshold": {k: (None if v is None else float(v))
                               for k, v in spec.collapse_threshold.items()},
    }


def _fmt(x, width=11, prec=4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return f"{'-':>{width}}"
    return f"{x:>{width}.{prec}g}"


def format_spectrum_table(spec: LabelSpectrum, max_eigs: int = 6) -> str:
    """Readable text table: one row per multiplicity present (`π(m)`, sets, `κ_m`, `δ_m`,
    spectrum of `C_m|_{1^⊥}`), then the whole distribution and the §3 collapse thresholds."""
    K = spec.num_classes

    def eigs(v):
        v = [float(x) for x in v]
        s = ", ".join(f"{x:.4g}" for x in v[:max_eigs])
        return s + (f", … ({len(v)} total)" if len(v) > max_eigs else "")

    lines = [
        f"label spectrum: K = {K}, mean multiplicity m̄ = {spec.mean_multiplicity:.6g}",
        "p = [" + ", ".join(f"{x:.4f}" for x in spec.class_frequencies) + "]",
        "",
        f"{'m':>4}{'pi(m)':>11}{'sets':>7}{'kappa_m':>11}{'delta_m':>11}   spectrum of C_m on 1-perp",
    ]
    for m in spec.multiplicities:
        lines.append(f"{m:>4}{_fmt(spec.multiplicity_mass[m])}{spec.multiplicity_count[m]:>7}"
                     f"{_fmt(spec.kappa[m])}{_fmt(spec.isotropy_defect[m])}   {eigs(spec.spectrum[m])}")
    lines.append(f"{'all':>4}{_fmt(1.0)}{sum(spec.multiplicity_count.values()):>7}"
                 f"{_fmt(spec.kappa_all)}{_fmt(None)}   {eigs(spec.spectrum_all)}")
    lines += ["", "collapse thresholds (THEORY §3, free bias): W = 0 is optimal iff "
              "lambda_W*lambda_H >= value"]
    for loss, v in spec.collapse_threshold.items():
        lines.append(f"  {loss:<15}{_fmt(v, 13, 8)}")
    lines.append("delta_m '-' : C_m = 0 (a single label set of that size), defect absent.")
    return "\n".join(lines)
