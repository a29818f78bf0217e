"""Figure `literature`: the field's published results next to the certified engine.

Each panel pairs a statement implemented from the paper (`mlnc_jax.theory.literature`,
`mlnc_jax.theory.imbalance`; the λ conventions are in their `CONVENTIONS`) with certified
solves; multi-class problems are `multiclass(counts)` with `"ce"` (PAL on singletons), d = K.

(a) Zhu et al. 2021, Thm 3.1: balanced CE, ‖w_k‖ and ‖h_k‖ of the ETF against the paper's
    λ_H at fixed λ_W; both vanish at `zhu_collapse_lambda`.
(b) Thrampoulidis et al. 2022: the distance of the normalised W Wᵀ and H Wᵀ to SELI as
    λ_W = λ_H = λ → 0, counts (10, 10, 1, 1), with and without a free bias.
(c) Fang et al. 2021 / Hong & Ling 2023: the minority spread (`minority_spread`) against the
    imbalance ratio R = n_A/n_B, K_A = K_B = 2, for three λ's; the vertical lines are the
    sharp threshold R* (`minority_collapse_ratio`).
(d) Dang et al. 2023: per-class ‖w_k‖² of one-layer imbalanced MSE (no bias), including a
    dead class (n_k ≤ N²λ_Wλ_H).
(e) Li et al. 2024: the M-lab NC constants ρ = ‖w_k‖², α_1, α_2 of PAL under a balanced
    distribution against λ_H.
(f) The imbalance conjecture: K = 6, every singleton and every pair, singleton weights
    imbalanced by a ratio r (half the classes r times the other half), pairs uniform. The
    median relative residuals of the pair prototypes under tag-wise averaging (scaled mean of
    the singletons, §5) and under the frequency-weighted synthesis rule (§4), per loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from mlnc_jax import UFMConfig, balanced, multiclass, singleton_imbalance
from mlnc_jax.analysis.synthesis import synthesis_report
from mlnc_jax.theory import literature as lit
from mlnc_jax.theory.imbalance import minority_collapse_ratio, minority_spread, seli_distance

from ._common import LOSS_COLORS, certified_note, finish, not_certified, note, solve_grid

NAME = "literature"


@dataclass(frozen=True)
class Config:
    zhu_K: int = 4
    zhu_n: int = 10
    zhu_lambda_w: float = 1e-2
    zhu_points: int = 12
    seli_counts: tuple = (10, 10, 1, 1)
    seli_lambdas: tuple = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
    fang_lambdas: tuple = (0.08, 0.1, 0.12)
    fang_points: int = 14
    dang_counts: tuple = (50, 20, 10, 5, 2)
    dang_lambdas: tuple = (1e-3, 2e-2)
    li_K: int = 4
    li_masses: tuple = ((1, 0.6), (2, 0.4))
    li_lambda_w: float = 1e-2
    li_points: int = 10
    conj_K: int = 6
    conj_ratios: tuple = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    conj_losses: tuple = ("pal", "bce", "mse")
    conj_lambda: float = 1e-3
    tol: float = 1e-10


FULL = Config()
QUICK = Config(zhu_points=5, seli_lambdas=(1e-2, 1e-4, 1e-6, 1e-8), fang_lambdas=(0.1,),
               fang_points=6, li_points=4, conj_ratios=(1.0, 4.0, 16.0), conj_losses=("pal", "mse"))


def _by_class(dist, H):
    return np.asarray(H)[np.argsort(np.argmax(np.asarray(dist.label_sets), axis=1))]


def _zhu(cfg):
    K, n, lw = cfg.zhu_K, cfg.zhu_n, cfg.zhu_lambda_w
    top = lit.zhu_collapse_lambda(K, n, lw)
    lhs = np.geomspace(1e-3 * top, 1.3 * top, cfg.zhu_points)
    dist = multiclass([n] * K)
    res = solve_grid([dist] * lhs.size, UFMConfig("ce", K, lw, 1.0), tol=cfg.tol,
                     lambda_h=[lit.zhu_lambda_h_ours(K, n, x) for x in lhs])
    dense = np.geomspace(lhs[0], lhs[-1], 200)
    theory = np.array([[p.w_norm, p.h_norm] for p in (lit.zhu_etf(K, n, lw, x) for x in dense)])
    got = np.array([[np.linalg.norm(res.W[i], axis=1).mean(), np.linalg.norm(res.H[i], axis=1).mean()]
                    for i in range(lhs.size)])
    return {"zhu_lambda_h": lhs, "zhu_dense": dense, "zhu_theory": theory, "zhu_engine": got,
            "zhu_collapse": np.float64(top)}, res, "Zhu λ_H"


def _seli(cfg):
    counts = np.asarray(cfg.seli_counts, dtype=np.float64)
    lams = np.asarray(cfg.seli_lambdas)
    dist, K = multiclass(counts), counts.size
    out, results = {"seli_lambda": lams}, []
    for bias in (False, True):
        res = solve_grid([dist] * lams.size, UFMConfig("ce", K, 1.0, 1.0, bias=bias),
                         lambda_w=lams, lambda_h=lams, tol=cfg.tol)
        ds = [seli_distance(res.W[i], _by_class(dist, res.H[i]), counts) for i in range(lams.size)]
        out[f"seli_{int(bias)}"] = np.array([[d["WWt"], d["logits"]] for d in ds])
        results.append(res)
    return out, results, "SELI λ"


def _fang(cfg):
    out, results = {}, []
    for j, lam in enumerate(cfg.fang_lambdas):
        R = minority_collapse_ratio(2, 2, lam, lam)
        ratios = np.geomspace(R / 8, 2 * R, cfg.fang_points)
        dists = [multiclass([r, r, 1.0, 1.0]) for r in ratios]
        res = solve_grid(dists, UFMConfig("ce", 4, lam, lam), tol=cfg.tol)
        out[f"fang_ratio_{j}"] = ratios
        out[f"fang_spread_{j}"] = np.array([minority_spread(res.W[i], [2, 3])
                                            for i in range(ratios.size)])
        out[f"fang_threshold_{j}"] = np.float64(R)
        results.append(res)
    return out, results, "Fang R"


def _dang(cfg):
    counts = np.asarray(cfg.dang_counts, dtype=np.float64)
    N, K = counts.sum(), counts.size
    dist = multiclass(counts)
    lams = np.asarray(cfg.dang_lambdas)
    res = solve_grid([dist] * lams.size, UFMConfig("mse", K, 1.0, 1.0, bias=False),
                     lambda_w=lams, lambda_h=N * lams, tol=cfg.tol)
    theory = np.array([lit.dang_mse(counts, x, x).w_sq for x in lams])
    got = np.array([np.sum(np.asarray(res.W[i]) ** 2, axis=1) for i in range(lams.size)])
    return {"dang_lambda": lams, "dang_counts": counts, "dang_theory": theory, "dang_engine": got,
            "dang_dead": np.array([lit.dang_thresholds(counts, x, x) for x in lams])}, res, "Dang λ"


def _li(cfg):
    K, lw, masses = cfg.li_K, cfg.li_lambda_w, dict(cfg.li_masses)
    thr = lit.li_pal_constants(K, masses, lw, 1e-3).threshold
    lhs = np.geomspace(1e-3 * thr / lw, 0.9 * thr / lw, cfg.li_points)
    dist = balanced(K, masses)
    res = solve_grid([dist] * lhs.size, UFMConfig("pal", K, lw, 1.0), lambda_h=lhs, tol=cfg.tol)
    dense = np.geomspace(lhs[0], thr / lw, 16)
    preds = [lit.li_pal_constants(K, masses, lw, x) for x in dense]
    theory = np.array([[p.rho] + [p.alpha[m] for m in sorted(masses)] for p in preds])
    Y = np.asarray(dist.label_sets, dtype=np.float64)
    m = Y.sum(1).astype(int)
    rows = []
    for i in range(lhs.size):
        W, H = np.asarray(res.W[i]), np.asarray(res.H[i])
        S = Y @ W  # Σ_{k∈S} w_k
        alpha = [np.median(np.sum(H[m == q] * S[m == q], 1) / np.sum(S[m == q] ** 2, 1))
                 for q in sorted(masses)]
        rows.append([np.mean(np.sum(W * W, 1))] + alpha)
    return {"li_lambda_h": lhs, "li_dense": dense, "li_threshold": np.float64(thr / lw),
            "li_theory": theory, "li_engine": np.array(rows)}, res, "Li λ_H"


def _conjecture(cfg):
    K, lam = cfg.conj_K, cfg.conj_lambda
    dists = [singleton_imbalance(K, r, multiplicity_mass={1: 0.5, 2: 0.5})
             for r in cfg.conj_ratios]
    out, results = {"conj_ratio": np.asarray(cfg.conj_ratios)}, []
    for loss in cfg.conj_losses:
        res = solve_grid(dists, UFMConfig(loss, K, lam, lam), tol=cfg.tol)
        reps = [synthesis_report(np.asarray(res.H[i]), d).summary for i, d in enumerate(dists)]
        out[f"conj_{loss}"] = np.array([[s["tagwise_median"], s["frequency_rule_median"]]
                                        for s in reps])
        results.append(res)
    return out, results, "conjecture r"


def compute(cfg: Config, progress=None):
    arrays, lines, cert = {}, [], []
    for part in (_zhu, _seli, _fang, _dang, _li, _conjecture):
        out, results, what = part(cfg)
        arrays.update(out)
        for res in results if isinstance(results, list) else [results]:
            lines += not_certified(res, what)
            cert.append(np.asarray(res.certified, dtype=bool))
        if progress is not None:
            progress(part.__name__)
    arrays["certified"] = np.concatenate(cert)
    return arrays, {"not_certified": lines, "conj_losses": list(cfg.conj_losses),
                    "fang_lambdas": list(cfg.fang_lambdas)}


def _panel_zhu(ax, a):
    x = a["zhu_lambda_h"]
    for j, (lab, c) in enumerate((("‖w_k‖", "C0"), ("‖h_k‖", "C1"))):
        ax.plot(a["zhu_dense"], a["zhu_theory"][:, j], color=c, label=f"{lab} Thm 3.1")
        ax.plot(x, a["zhu_engine"][:, j], "o", color=c, ms=4, mfc="none", label=f"{lab} engine")
    ax.axvline(float(a["zhu_collapse"]), color="0.5", ls=":", lw=1)
    ax.set(xscale="log", xlabel="λ_H (Zhu et al.'s, per whole H)", ylabel="norm",
           title="(a) Zhu 2021: balanced CE ETF norms")
    ax.legend(fontsize=7)


def _panel_seli(ax, a):
    x = a["seli_lambda"]
    for bias, ls in ((0, "-"), (1, "--")):
        d = a[f"seli_{bias}"]
        ax.plot(x, d[:, 0], "o" + ls, color="C0", ms=4, label=f"W Wᵀ, bias={bool(bias)}")
        ax.plot(x, d[:, 1], "s" + ls, color="C3", ms=4, label=f"H Wᵀ, bias={bool(bias)}")
    ax.set(xscale="log", xlabel="λ_W = λ_H", ylabel="‖normalised − SELI‖_F",
           title="(b) Thrampoulidis 2022: distance to SELI")
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    d0 = a["seli_0"][:, 0]
    note(ax, f"no bias: {d0[0]:.3f} → {d0[-1]:.3f}\nbias: {a['seli_1'][0, 0]:.3f} → "
             f"{a['seli_1'][-1, 0]:.3f}", loc=(0.55, 0.35))


def _panel_fang(ax, a, meta):
    for j, lam in enumerate(meta["fang_lambdas"]):
        R = float(a[f"fang_threshold_{j}"])
        ax.plot(a[f"fang_ratio_{j}"], np.maximum(a[f"fang_spread_{j}"], 1e-16), "o-", ms=4,
                color=f"C{j}", label=f"λ={lam:g}: R*={R:.1f}")
        ax.axvline(R, color=f"C{j}", ls=":", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="R = n_A / n_B (K_A = K_B = 2)",
           ylabel="minority spread", title="(c) Fang 2021 / Hong & Ling 2023: minority collapse")
    ax.legend(fontsize=7)


def _panel_dang(ax, a):
    K = a["dang_theory"].shape[1]
    for i, lam in enumerate(a["dang_lambda"]):
        ax.plot(np.arange(K), a["dang_theory"][i], "-", color=f"C{i}", label=f"closed form λ={lam:g}")
        ax.plot(np.arange(K), a["dang_engine"][i], "o", color=f"C{i}", ms=5, mfc="none")
    ax.set(xlabel="class k (counts " + ", ".join(str(int(c)) for c in a["dang_counts"]) + ")",
           ylabel="‖w_k‖²", title="(d) Dang 2023: imbalanced MSE norms")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=7)
    dead = a["dang_dead"]
    note(ax, "dead classes: " + "; ".join(f"λ={lam:g}: {np.flatnonzero(dead[i]).tolist()}"
                                          for i, lam in enumerate(a["dang_lambda"])), loc=(0.02, 0.02))


def _panel_li(ax, a):
    x = a["li_lambda_h"]
    for j, lab in enumerate(("ρ = ‖w_k‖²", "α_1", "α_2")):
        ax.plot(a["li_dense"], np.maximum(a["li_theory"][:, j], 1e-3), color=f"C{j}", label=lab)
        ax.plot(x, a["li_engine"][:, j], "o", color=f"C{j}", ms=4, mfc="none")
    ax.axvline(float(a["li_threshold"]), color="0.5", ls=":", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="λ_H (collapse at the dotted line)", title="(e) Li 2024: M-lab NC constants (PAL)")
    ax.legend(fontsize=7)


def _panel_conj(ax, a, meta):
    r = a["conj_ratio"]
    for loss in meta["conj_losses"]:
        d = a[f"conj_{loss}"]
        c = LOSS_COLORS.get(loss, None)
        ax.plot(r, d[:, 0], "o-", color=c, ms=4, label=f"{loss}: tag-wise")
        ax.plot(r, d[:, 1], "s--", color=c, ms=4, label=f"{loss}: frequency rule")
    ax.set(xscale="log", yscale="log", xlabel="singleton imbalance r (K = 6, all pairs)",
           ylabel="median relative residual", title="(f) the imbalance conjecture (pairs)")
    ax.legend(fontsize=6)


def plot(a, meta):
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    _panel_zhu(axes[0, 0], a)
    _panel_seli(axes[0, 1], a)
    _panel_fang(axes[0, 2], a, meta)
    _panel_dang(axes[1, 0], a)
    _panel_li(axes[1, 1], a)
    _panel_conj(axes[1, 2], a, meta)
    return finish(fig, "Published results, lines from the papers' statements, dots certified "
                       f"solves; {certified_note(a['certified'])}")
