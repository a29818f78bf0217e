"""Imbalanced multi-class geometry: SELI (Thrampoulidis et al. 2022) and minority collapse
(Fang et al. 2021), stated in the papers' variables and converted to the UFM of THEORY §2.

Convention. Thrampoulidis et al. (NeurIPS 2022, arXiv 2208.05512, eq. (1)) regularise
`Σ_i ℓ(W h_i, y_i) + λ_W/2‖W‖² + λ_H/2‖H‖²` over N samples with no bias. Samples of one
class share one feature at the optimum, so with our weights `π_k = n_k/N` this is our
objective times N with `λ_W(paper) = N λ_W`, `λ_H(paper) = λ_H` (THEORY §2) and
`bias=False`. The SELI statement (their Thm. 1 with the ridge-path argument, Sec. 3) is a
statement about directions as `λ → 0`: the solution, normalised, tends to the UF-SVM solution
`W H = Ẑ`, `W Wᵀ = (Ẑ Ẑᵀ)^{1/2}`, `Hᵀ H = (Ẑᵀ Ẑ)^{1/2}` with `Ẑ = P E`, `P = I − 11ᵀ/K`
and `E` the one-hot `K × N` label matrix. Grouping samples by class (`E Eᵀ = D = diag(n)`):
`W Wᵀ = (P D P)^{1/2}`, per-class `H Hᵀ = D^{-1/2} (D^{1/2} P D^{1/2})^{1/2} D^{-1/2}` and
the per-class logit matrix `H Wᵀ = P`. Directions do not depend on the ratio `λ_W/λ_H`
beyond an overall scale between W and H, which the Frobenius normalisation removes.

Fang et al. (PNAS 2021, arXiv 2101.12699, eq. (3)) constrain
`(1/K)Σ_k‖w_k‖² ≤ E_W` and `(1/K)Σ_k (1/n_k)Σ_i‖h_{k,i}‖² ≤ E_H`: the feature budget is
averaged over classes, not samples. Its Lagrangian is our objective only when every class
has the same count; for imbalanced counts it is a UFM whose feature penalty weights class k
by `1/K` rather than `π_k`, which THEORY §2 does not express with one `λ_H`. What carries
over is their Thm. 5 (minority collapse): with `K_A` classes of `n_A` samples and `K_B` of
`n_B`, the minority classifiers' differences tend to 0 as `n_A/n_B → ∞`;
`minority_spread` measures that.

Hong & Ling (2023, arXiv 2309.09725) show that in the regularised CE UFM minority collapse
happens at a finite imbalance, past a sharp threshold. In our convention the threshold follows
from the certificate of THEORY §3: at a point where the minority classes share one classifier
and one feature, the difference direction `v = e_b − e_b'` lies outside both singular
subspaces of `X = D_π^{1/2} Z`, and the loss gradient along it has norm `√π_B` (the
minority softmax rows are equal there). The certificate holds in that direction iff
`√π_B ≤ √(λ_W λ_H)`, i.e. minority collapse iff `n_B / N ≤ λ_W λ_H`, with or without bias
(the bias moves all logits of a class pair alike). `minority_collapse_ratio` solves this for
`K_A` classes of `n_A` and `K_B` of `n_B`: `R* = n_A/n_B = (1/(λ_W λ_H) − K_B)/K_A`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["centering", "minority_collapse_ratio", "minority_collapse_weight", "minority_spread", "psd_sqrt", "seli_distance", "seli_gram"]


def centering(K: int) -> np.ndarray:
    """`P = I − 11ᵀ/K`: the columns are the simplex encodings `z_k = e_k − 1/K`."""
    return np.eye(K) - np.full((K, K), 1.0 / K)


def psd_sqrt(A: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix; rounding negatives are clipped to 0."""
    w, V = np.linalg.eigh(0.5 * (A + A.T))
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T


def _unit(A: np.ndarray) -> np.ndarray:
    return A / np.linalg.norm(A)


def seli_gram(counts) -> dict:
    """SELI (Thrampoulidis et al. 2022, Def. 2 / Thm. 1) per class, Frobenius-normalised.

    Returns `WWt [K,K]`, `HHt [K,K]` (per-class features, rows in class order) and
    `logits [K,K]` (= `H Wᵀ`, row k the logits of class k), each of unit Frobenius norm.
    """
    n = np.asarray(counts, dtype=np.float64)
    P = centering(n.size)
    Dh = np.diag(np.sqrt(n))
    Dih = np.diag(1.0 / np.sqrt(n))
    return {"WWt": _unit(psd_sqrt(P @ np.diag(n) @ P)),
            "HHt": _unit(Dih @ psd_sqrt(Dh @ P @ Dh) @ Dih),
            "logits": _unit(P)}


def seli_distance(W: np.ndarray, H: np.ndarray, counts) -> dict:
    """Frobenius distances of the normalised `W Wᵀ`, `H Hᵀ`, `H Wᵀ` to SELI (rotation invariant)."""
    ref = seli_gram(counts)
    got = {"WWt": W @ W.T, "HHt": H @ H.T, "logits": H @ W.T}
    return {k: float(np.linalg.norm(_unit(got[k]) - ref[k])) for k in ref}


def minority_spread(W: np.ndarray, minority) -> float:
    """Fang et al. 2021 Thm. 5 quantity: `max_{k,k'∈B} ‖w_k − w_k'‖ / max_k ‖w_k‖`.

    Minority collapse is this tending to 0; it is scale free, so it compares the layer-peeled
    model and a penalised UFM regardless of the budget/multiplier pair.
    """
    W = np.asarray(W, dtype=np.float64)
    B = W[np.asarray(minority, dtype=int)]
    diff = B[:, None, :] - B[None, :, :]
    return float(np.sqrt((diff ** 2).sum(-1)).max() / np.linalg.norm(W, axis=1).max())


def minority_collapse_weight(lambda_w: float, lambda_h: float) -> float:
    """Largest minority weight `π_B = n_B/N` at which minority classes collapse: `λ_W λ_H`."""
    return float(lambda_w) * float(lambda_h)


def minority_collapse_ratio(K_A: int, K_B: int, lambda_w: float, lambda_h: float) -> float:
    """Imbalance ratio `R* = n_A/n_B` above which the `K_B` minority classes collapse.

    From `n_B/(K_A n_A + K_B n_B) = λ_W λ_H`; `inf` when no ratio reaches it
    (`K_B λ_W λ_H ≥ 1`, the minority weight can never fall that low).
    """
    inv = 1.0 / minority_collapse_weight(lambda_w, lambda_h)
    return float((inv - K_B) / K_A) if inv > K_B else float("inf")
