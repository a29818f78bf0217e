"""Exact closed forms of the UFM (THEORY §4: MSE spectral solution).

MSE, free bias (`λ_b = 0`): `ỹ_s = y_s − p`, `Σ = C`. No bias: `ỹ_s = y_s`, `Σ = M`.
With eigenpairs `(λ_j, u_j)` of `Σ`, `τ = √(λ_W λ_H)`, `s_j = (√λ_j − τ)_+`,
`φ_j = (1 − τ/√λ_j)_+`, active directions `λ_j > τ²` (top `d` of them):

- `W Wᵀ = √(λ_H/λ_W) Σ_j s_j u_j u_jᵀ`
- `h_s = A ỹ_s`, `A = (λ_W/λ_H)^{1/4} diag(√s_j/√λ_j) U_activeᵀ` (up to a rotation of R^d)
- `W h_s = Σ_j φ_j u_j u_jᵀ ỹ_s`, `b = p` (free bias)
- `F* = Σ_j (λ_j/2 if inactive else τ√λ_j − τ²/2)`
"""

from __future__ import annotations

import numpy as np

from ..model.errors import InputError
from ..model.labels import LabelDistribution
from ..model.losses import mse, pal, pal_normalized
from ..model.ufm import ClosedForm, UFMConfig, UFMParams
from .symmetric_pal import symmetric_pal_closed_form

__all__ = ["ClosedForm", "closed_form", "mse_closed_form"]


def mse_closed_form(dist: LabelDistribution, config: UFMConfig) -> ClosedForm:
    """Exact MSE solution of THEORY §4 (free bias or no bias), in float64 numpy."""
    config = config.validate()
    if config.loss_record != mse:
        raise InputError(f"the spectral closed form is for loss 'mse', not {config.loss!r}")
    if config.bias and config.lambda_b != 0:
        raise InputError("the MSE closed form needs a free bias (lambda_b = 0) or --no-bias")
    Y = np.asarray(dist.label_sets, dtype=np.float64)
    w = np.asarray(dist.weights, dtype=np.float64)
    K = dist.num_classes
    p = w @ Y
    Yt = Y - p if config.bias else Y
    Sigma = (Yt * w[:, None]).T @ Yt
    lam, U = np.linalg.eigh((Sigma + Sigma.T) / 2)
    lam = np.clip(lam, 0.0, None)
    tau = config.tau
    order = np.argsort(lam)[::-1]
    active = [j for j in order if lam[j] > tau**2][: config.dim]
    rank = len(active)
    inactive = np.setdiff1d(np.arange(K), active)
    lam_a = lam[active]
    Ua = U[:, active]
    s = np.sqrt(lam_a) - tau
    phi = s / np.sqrt(lam_a)
    r = np.sqrt(config.lambda_h / config.lambda_w)
    gram_W = r * (Ua * s) @ Ua.T
    proj = (Yt @ Ua) * (w > 0)[:, None]  # (u_jᵀ ỹ_s); zero-weight padding rows stay 0
    gram_H = (proj * (s / lam_a) / r) @ proj.T
    b = p.copy() if config.bias else np.zeros(K)
    logits = (proj * phi) @ Ua.T + b
    objective = float(np.sum(lam[inactive]) / 2 + np.sum(tau * np.sqrt(lam_a) - tau**2 / 2))
    W = np.zeros((K, config.dim))
    H = np.zeros((Y.shape[0], config.dim))
    W[:, :rank] = r**0.5 * Ua * np.sqrt(s)
    H[:, :rank] = proj * (np.sqrt(s) / np.sqrt(lam_a)) / r**0.5
    return ClosedForm(gram_W, gram_H, logits, b, objective, rank, UFMParams(W, H, b), lam, U)


_CLOSED_FORMS = {mse: mse_closed_form, pal: symmetric_pal_closed_form,
                 pal_normalized: symmetric_pal_closed_form}


def closed_form(dist: LabelDistribution, config: UFMConfig) -> ClosedForm:
    """Closed form for `config.loss`: `mse` (THEORY §4); `pal`, `pal_normalized` on a
    symmetric distribution (THEORY §5)."""
    config = config.validate()
    fn = _CLOSED_FORMS.get(config.loss_record)
    if fn is None:
        raise InputError(f"no closed form is known for loss {config.loss_record.name!r}; use solve()")
    return fn(dist, config)
