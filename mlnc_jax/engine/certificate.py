"""The global-optimality certificate (THEORY §3, §2c); the collapse threshold of §3 is in
`theory.thresholds`.

With `G = [√π_s g_s]_s`, `g_s = ∇_z ℓ(W h_s + b, y_s)`, a first-order critical point with
`‖G‖_op ≤ √(λ_W λ_H)` is a global minimiser of the UFM (convex loss, `d ≥ rank` of the
convex solution). We report `ρ = ‖G‖_op / √(λ_W λ_H)`: `ρ ≈ 1` at an optimum with `W ≠ 0`,
`ρ ≤ 1` at the collapsed optimum, `ρ > 1` at a non-global critical point.
`‖G‖_op` is taken from the `K × K` Gram `GᵀG`, never from a `T × T` buffer.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..model.ufm import UFMConfig, UFMParams, loss_gradients

__all__ = ["gradient_matrix", "certificate", "gradient_gram_eigenvalues", "rho_from_eigenvalues",
           "rho_from_gradients", "rank_diagnosis"]


def gradient_matrix(params: UFMParams, label_sets, weights, config: UFMConfig):
    """`G = [√π_s g_s]_s` as a `[K, T]` matrix (THEORY §3)."""
    g = loss_gradients(params, label_sets, weights, config)
    return (jnp.sqrt(weights)[:, None] * g).T


def gradient_gram_eigenvalues(G_rows):
    """Eigenvalues (ascending) of `GᵀG = Σ_s π_s g_s g_sᵀ` from the rows `√π_s g_s`."""
    return jnp.linalg.eigvalsh(G_rows.T @ G_rows)


def rho_from_eigenvalues(eigs, lambda_w, lambda_h):
    """`ρ = √λ_max(GᵀG) / √(λ_W λ_H)` (THEORY §3)."""
    return jnp.sqrt(jnp.maximum(eigs[..., -1], 0.0)) / jnp.sqrt(lambda_w * lambda_h)


def rho_from_gradients(G_rows, lambda_w, lambda_h):
    """`ρ = ‖G‖_op / √(λ_W λ_H)` from the rows `√π_s g_s` (`[T, K]`)."""
    return rho_from_eigenvalues(gradient_gram_eigenvalues(G_rows), lambda_w, lambda_h)


def certificate(params: UFMParams, label_sets, weights, config: UFMConfig):
    """`ρ = ‖G‖_op / √(λ_W λ_H)` (THEORY §3)."""
    G = gradient_matrix(params, label_sets, weights, config)
    return rho_from_gradients(G.T, config.lambda_w, config.lambda_h)


def rank_diagnosis(eigs, lambda_w, lambda_h, dim: int, rtol: float) -> str:
    """Why `ρ > 1` at a converged point (THEORY §2c), from the eigenvalues of `GᵀG`: `d`
    below the rank of the convex solution (more of them at or above `λ_W λ_H` than `d`),
    or a saddle."""
    ev = np.asarray(eigs, dtype=np.float64)
    n = int(np.sum(ev >= lambda_w * lambda_h * (1 - rtol)))
    if n > dim:
        return (f"d = {dim} is below the rank of the convex solution ({n} eigenvalues of "
                f"G Gᵀ at or above λ_W λ_H): use dim >= {n}")
    return f"a saddle point (rho > 1 with {n} eigenvalues of G Gᵀ ≥ λ_W λ_H <= d = {dim})"


