"""Which UFM is a network at? Fit `λ_W, λ_H` to its last layer through the optimum (THEORY §8).

Given the network's classifier Gram `A = W Wᵀ` and label-set-mean Gram `B = μ μᵀ`, choose
`θ = (log λ_W, log λ_H)` minimising

    D(θ) = ½ ‖r(θ)‖²,   r = [ (W*W*ᵀ − A) / ‖A‖ ,  D½(H*H*ᵀ − B)D½ / ‖D½ B D½‖ ],

`W*, H*` the certified UFM optimum of the empirical label distribution at `θ` (same loss,
bias, `d`), `D = diag(π)` (rare label sets count by their frequency, as in the objective).
The Grams are compared raw: their scales carry `λ_W / λ_H` (every critical point balances
`λ_W ‖W‖² = λ_H Σ_s π_s ‖h_s‖²`, reported as `balance` for the network at the fit) and
their shrinkage carries `√(λ_W λ_H)`.

Method: a one-dimensional scan of `√(λ_W λ_H)` at the balance ratio (one `solve_batch`),
then Levenberg–Marquardt steps with the Jacobian `∂r/∂θ` by `jax.jacfwd` through
`mlnc_jax.optimum` (implicit derivatives of the certified optimum, THEORY §8).

Uncertainty: the curvature `JᵀJ` of `D` at the fit (Gauss–Newton) and the standard errors of
`log λ` that nonlinear least squares gives, `s² (JᵀJ)⁻¹` with `s² = 2D/(n − p)` (`n` the
independent Gram entries, `p` the fitted λ's): how sharply the geometry pins the λ's if
the remaining distance were noise. It is not a statement about how the network was trained.

What it identifies: the UFM of this loss, bias and `d` whose optimum's geometry is nearest
the network's. A network trained with `λ_θ = 0` at its terminal phase sits near the UFM
optimum of its own `λ_W, λ_H` and the fit recovers them; a penalty on the backbone, an
unfinished run or a different loss leaves an *effective* pair, and a large remaining
distance says that no UFM of this family describes the network.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..engine.batch import solve_batch
from ..engine.implicit import optimum
from ..model.errors import InputError, NotCertifiedError, RankChangeError
from ..model.labels import LabelDistribution
from ..model.ufm import UFMConfig

__all__ = ["LambdaFit", "fit_lambdas", "balance_ratio"]

_SCAN = np.logspace(-6.0, 0.0, 13)


class LambdaFit(NamedTuple):
    """The fitted `lambda_w`, `lambda_h`; `distance` = `√(2D)` at the fit (and at the scan's
    best point, `start_distance`); `log_std` `[2]` standard errors of `log λ` (0 for a
    fixed λ); `curvature` `[2, 2]` `JᵀJ` in `log λ`; `balance` = `λ_W‖W‖² / (λ_H Σπ‖μ_s‖²)`
    for the network at the fit (1 at any UFM critical point); `steps`, `converged`."""

    lambda_w: float
    lambda_h: float
    distance: float
    start_lambda_w: float
    start_lambda_h: float
    start_distance: float
    log_std: np.ndarray
    curvature: np.ndarray
    balance: float
    steps: int
    converged: bool


def balance_ratio(W, means, weights, lambda_w, lambda_h) -> float:
    """`λ_W ‖W‖² / (λ_H Σ_s π_s ‖μ_s‖²)`: 1 at every critical point of the UFM (rescaling)."""
    hh = float(np.asarray(weights) @ np.sum(np.asarray(means) ** 2, 1))
    return float(lambda_w * np.sum(np.asarray(W) ** 2) / (lambda_h * hh)) if hh > 0 else math.inf


def _residual(gram_W, gram_H, A, B, weights):
    """`r` of the module docstring from an optimum's Grams (jnp: traced or not)."""
    sw = jnp.sqrt(jnp.asarray(weights))
    weigh = lambda G: sw[:, None] * G * sw
    Bw = weigh(jnp.asarray(B))
    dW = (gram_W - A) / jnp.linalg.norm(A)
    dH = (weigh(gram_H) - Bw) / jnp.linalg.norm(Bw)
    return jnp.concatenate([dW.ravel(), dH.ravel()])


def _residual_fn(dist, config, A, B, tol):
    def residual(theta):
        o = optimum(dist, config, lambda_w=jnp.exp(theta[0]), lambda_h=jnp.exp(theta[1]), tol=tol)
        return _residual(o.gram_W, o.gram_H, A, B, dist.weights)
    return residual


def _scan_start(dist, config, A, B, ratio, fixed, tol):
    """Best `(log λ_W, log λ_H)` on the scan of `√(λ_W λ_H)` at `λ_W/λ_H = ratio`."""
    lw = _SCAN * math.sqrt(ratio) if fixed[0] is None else np.full(_SCAN.shape, fixed[0])
    lh = _SCAN / math.sqrt(ratio) if fixed[1] is None else np.full(_SCAN.shape, fixed[1])
    if fixed[0] is None and fixed[1] is not None:
        lw = _SCAN**2 / lh
    if fixed[1] is None and fixed[0] is not None:
        lh = _SCAN**2 / lw
    res = solve_batch([dist] * len(_SCAN), config, lambda_w=list(lw), lambda_h=list(lh),
                      tol=tol, progress=False, warn=False)
    best, best_d = None, math.inf
    for i in range(len(_SCAN)):
        if not res.certified[i]:
            continue
        W, H = np.asarray(res.W[i]), np.asarray(res.H[i])[: dist.num_sets]
        d = float(jnp.linalg.norm(_residual(W @ W.T, H @ H.T, A, B, dist.weights)))
        if d < best_d:
            best, best_d = np.log([lw[i], lh[i]]), d
    if best is None:
        raise InputError("no certified UFM optimum on the λ scan: cannot fit λ_W, λ_H")
    return best, best_d


def _evaluate(residual, jac, theta):
    """`(r, J)` at `theta`, or None where the optimum is not certified or not smooth."""
    try:
        return np.asarray(residual(jnp.asarray(theta))), np.asarray(jac(jnp.asarray(theta)))
    except (NotCertifiedError, RankChangeError):
        return None


def _lm(residual, theta, free, max_steps, xtol, gtol=1e-6):
    """Levenberg–Marquardt on the free coordinates: `(θ, r, J, steps, converged)`."""
    jac = jax.jacfwd(residual)
    first = _evaluate(residual, jac, theta)
    if first is None:
        raise InputError("the UFM optimum at the scan's best λ's is not certified or not "
                         "differentiable: cannot fit λ_W, λ_H")
    r, J = first
    mu, steps, converged = 1e-4, 0, False
    while steps < max_steps and not converged:
        steps += 1
        Jf = J[:, free]
        g, N = Jf.T @ r, Jf.T @ Jf
        delta = np.zeros(2)
        delta[free] = -np.linalg.solve(N + mu * np.diag(np.diag(N) + 1e-12), g)
        trial = _evaluate(residual, jac, theta + delta)
        if trial is not None and trial[0] @ trial[0] <= r @ r:
            theta, (r, J), mu = theta + delta, trial, max(mu / 10, 1e-12)
            Jf = J[:, free]
            # first-order optimality (r orthogonal to the range of J, relative), or a small,
            # nearly undamped Gauss–Newton step (a zero-residual fit converges quadratically)
            converged = bool(np.linalg.norm(Jf.T @ r) <= gtol * np.linalg.norm(Jf) * np.linalg.norm(r)
                             or (np.max(np.abs(delta)) < xtol and mu <= 1e-6))
        else:
            mu *= 10
            converged = mu > 1e8
    return theta, r, J, steps, converged


def fit_lambdas(W, means, dist: LabelDistribution, config: UFMConfig, *, lambda_w=None,
                lambda_h=None, max_steps: int = 40, xtol: float = 1e-8,
                tol: float = 1e-12) -> LambdaFit:
    """Fit the λ's not given (`lambda_w`, `lambda_h` fix one) to a network's classifier `W`
    `[K, d]` and label-set means `[T, d]` (rows of `dist`) under `config`'s loss, bias and
    `dim` (its λ's are ignored). See the module docstring."""
    W, means = np.asarray(W, np.float64), np.asarray(means, np.float64)
    A, B = W @ W.T, means @ means.T
    free = np.array([lambda_w is None, lambda_h is None])
    if not free.any():
        raise InputError("fit_lambdas: both λ's are given; nothing to fit")
    ratio = float(np.asarray(dist.weights) @ np.sum(means**2, 1) / max(np.sum(W**2), 1e-300))
    with jax.enable_x64(True):
        theta0, d0 = _scan_start(dist, config, A, B, max(ratio, 1e-12), (lambda_w, lambda_h), tol)
        residual = _residual_fn(dist, config, jnp.asarray(A), jnp.asarray(B), tol)
        theta, r, J, steps, converged = _lm(residual, theta0, free, max_steps, xtol)
    Jf = J[:, free]
    n = W.shape[0] * (W.shape[0] + 1) // 2 + dist.num_sets * (dist.num_sets + 1) // 2
    s2 = float(r @ r) / max(n - int(free.sum()), 1)
    cov = s2 * np.linalg.pinv(Jf.T @ Jf)
    log_std = np.zeros(2)
    log_std[free] = np.sqrt(np.maximum(np.diag(cov), 0.0))
    lw, lh = (float(v) for v in np.exp(theta))
    return LambdaFit(lw, lh, float(np.linalg.norm(r)), float(np.exp(theta0[0])),
                     float(np.exp(theta0[1])), d0, log_std, J.T @ J,
                     balance_ratio(W, means, dist.weights, lw, lh), steps, converged)
