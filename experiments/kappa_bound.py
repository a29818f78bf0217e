"""Figure `kappa_bound`: the weakest label contrast κ_m (THEORY §1) as a lower bound of the
terminal geometry, at scale over random label distributions.

Each distribution: K classes (drawn from `Config.classes`), all singletons plus a random
support of higher label sets (multiplicities up to `max_multiplicity`), weights either
Dirichlet(α) or long-tailed (Zipf, π ∝ rank^{−s} over a random order). For each solve,
m* = argmin_m κ_m over the multiplicities present whose slice spans 1^⊥ (the weakest
label contrast; slices with κ_m = 0 carry no bound), and

    σ_{m*} = λ_min(Cov_{m*}(z)|_{1^⊥})   (logits z_s = W h_s + b, `measure.geometry`),
    s_min = smallest non-zero singular value of the centred prototypes [h_s − h̄]_s.

MSE: THEORY §4 ("The κ_m bound") gives σ_m ≥ κ_m · s_min(P B|_{1^⊥})² exactly; the
closed-form σ_m and this bound are computed for every MSE distribution, and the ratio
σ_m / bound ≥ 1 is the tightness. For PAL and BCE there is no
closed form: the lower envelope σ_m ≥ c κ_m^a is a line fitted through the lower convex hull
of log σ_m against log κ_m (`_hull_fit`).

Problems of one panel (a loss and a λ_W = λ_H) share one `solve_batch` call per K: the
engine requires one `num_classes` per call, so a panel is grouped by K.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from mlnc_jax import UFMConfig, mse_closed_form
from mlnc_jax.analysis.geometry import (
    centred_singular_values,
    geometry_stability,
    mse_contrast_shrinkage,
)
from mlnc_jax.model.labels import LabelDistribution

from ._common import LOSS_COLORS, certified_note, finish, not_certified, note, solve_grid

NAME = "kappa_bound"
LOSSES = ("pal", "bce", "mse")
KAPPA_CUT = 1e-9  # far above the ~1e-16 round-off of an exactly singular C_m|_{1^⊥}


@dataclass(frozen=True)
class Config:
    per_loss: int = 10_000             # distributions per loss, split evenly over the λ
    classes: tuple = (4, 6, 8, 12, 16, 20)
    max_multiplicity: int = 3
    lambdas: tuple = (1e-3, 1e-2)
    rank_rtol: float = 1e-5
    seed: int = 0
    tol: float = 1e-10


FULL = Config()
QUICK = Config(per_loss=120, classes=(4, 6))


def random_distribution(rng, K, max_mult):
    """All K singletons plus up to K random sets of sizes 2..max_mult, Dirichlet or Zipf weights
    (each at least 1e-6 of the mass)."""
    sets = {(k,) for k in range(K)}
    top = int(rng.integers(1, max_mult + 1))
    for _ in range(int(rng.integers(0, K + 1)) if top > 1 else 0):
        m = int(rng.integers(2, top + 1))
        sets.add(tuple(sorted(rng.choice(K, m, replace=False).tolist())))
    sets = sorted(sets, key=lambda s: (len(s), s))
    if rng.random() < 0.5:
        w = rng.dirichlet(np.full(len(sets), rng.uniform(0.3, 3.0)))
    else:
        w = rng.permutation(np.arange(1, len(sets) + 1) ** -rng.uniform(0.5, 2.0))
    # a floor at 1e-6 of the mass (a data set of at most 10⁶ samples): Dirichlet(0.3) draws
    # weights down to 1e-10 and below, a label set no data set could show
    w = np.maximum(w / w.sum(), 1e-6)
    return LabelDistribution.from_sets(sets, w / w.sum(), K)


def _smin(H, w, rtol):
    # numpy on the host: eager jnp would compile the SVD once per distinct number of sets
    return float(centred_singular_values(np.asarray(H), np.asarray(w), rtol=rtol)[1])


def _weakest(W, H, b, dist, rtol):
    """(κ_{m*}, σ_{m*}, m*, s_min) at the multiplicity with the smallest κ_m among the slices
    whose sets span 1^⊥ (κ_m > KAPPA_CUT; a slice of fewer than K sets has κ_m = 0 and no
    contrast to bound). The singletons are always present and span 1^⊥."""
    g = geometry_stability(W, H, b, dist)
    live = {m: k for m, k in g.kappa.items() if k > KAPPA_CUT}
    m = min(live, key=live.get)
    return g.kappa[m], g.contrast_separation[m], m, _smin(H, np.asarray(dist.weights), rtol)


def mse_bound(dist, config, m):
    """Closed-form (THEORY §4) σ_m and the bound κ_m · s_min(P B|_{1^⊥})²."""
    cf = mse_closed_form(dist, config)
    P = cf.params
    g = geometry_stability(P.W, P.H, P.b, dist)
    return g.contrast_separation[m], g.kappa[m] * mse_contrast_shrinkage(
        cf.eigenvalues, cf.eigenvectors, config.tau)


def _panel(dists, Ks, config, cfg):
    out = {k: np.zeros(len(dists)) for k in ("kappa", "sigma", "mult", "smin", "certified")}
    bad = []
    for K in np.unique(Ks):
        idx = np.flatnonzero(Ks == K)
        res = solve_grid([dists[i] for i in idx], config._replace(dim=int(K)), seeds=cfg.seed,
                         tol=cfg.tol)
        for j, i in enumerate(idx):
            s = res.item(j)
            out["kappa"][i], out["sigma"][i], out["mult"][i], out["smin"][i] = _weakest(
                s.W, s.H, s.b, dists[i], cfg.rank_rtol)
        out["certified"][idx] = res.certified
        bad += not_certified(res, f"{config.loss} λ={config.lambda_w:g} K={K}", idx)
    out["certified"] = out["certified"].astype(bool)
    return out, bad


def _hull_fit(k, s):
    """c, a of σ ≥ c κ^a: the lower convex hull of (log κ, log σ), then the hull edge that
    spans the most points in κ (the envelope's dominant slope) extended as a line, shifted
    down so every point lies on or above it."""
    ok = (k > 0) & (s > 0)
    x, y = np.log(k[ok]), np.log(s[ok])
    o = np.argsort(x)
    x, y = x[o], y[o]
    hull = []
    for p in zip(x, y):
        while len(hull) >= 2 and (hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1]) - \
                (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0]) <= 0:
            hull.pop()
        hull.append(p)
    h = np.asarray(hull)
    a = float(np.polyfit(h[:, 0], h[:, 1], 1)[0]) if len(h) > 1 else 1.0
    logc = float(np.min(y - a * x))
    return float(np.exp(logc)), a, float(np.quantile(np.exp(y - a * x - logc), 0.01))


def compute(cfg: Config, progress=None):
    rng = np.random.default_rng(cfg.seed)
    n = cfg.per_loss // len(cfg.lambdas)
    out, bad, fits = {}, [], {}
    for li, lam in enumerate(cfg.lambdas):
        Ks = rng.choice(np.asarray(cfg.classes), n)
        dists = [random_distribution(rng, int(K), cfg.max_multiplicity) for K in Ks]
        for loss in LOSSES:
            config = UFMConfig(loss, int(Ks[0]), lam, lam)
            r, b = _panel(dists, Ks, config, cfg)
            bad += b
            out.update({f"{loss}_{li}_{k}": v for k, v in r.items()})
            c = r["certified"]
            if loss == "mse":
                cf = [mse_bound(d, config._replace(dim=int(K)), int(m))
                      for d, K, m in zip(dists, Ks, r["mult"])]
                out[f"mse_{li}_closed_sigma"] = np.array([x[0] for x in cf])
                out[f"mse_{li}_bound"] = np.array([x[1] for x in cf])
            fits[f"{loss}_{li}"] = dict(zip(("c", "a", "q01_ratio"),
                                            _hull_fit(r["kappa"][c], r["sigma"][c])))
            fits[f"{loss}_{li}"]["certified"] = int(c.sum())
            fits[f"{loss}_{li}"]["total"] = int(c.size)
        out[f"K_{li}"] = Ks
    return out, {"seed": cfg.seed, "not_certified": bad, "envelope_fits": fits,
                 "grouping": "one solve_batch per (loss, λ, K): the engine needs one K per call"}


def _mse_note(a, li, c):
    sig, cs, bd = a[f"mse_{li}_sigma"][c], a[f"mse_{li}_closed_sigma"][c], a[f"mse_{li}_bound"][c]
    ok = bd > 1e-12
    r = sig[ok] / bd[ok]
    rel = np.max(np.abs(sig - cs) / np.maximum(np.abs(cs), 1e-12))
    return (f"σ/bound: min {r.min():.4f}, median {np.median(r):.3f}, 99% {np.quantile(r, .99):.2f}"
            f"\nsolver vs closed form σ: max rel. {rel:.1e}")


def _scatter(ax, a, meta, li, key):
    lam = meta["config"]["lambdas"][li]
    for loss in LOSSES:
        c = a[f"{loss}_{li}_certified"]
        k, y = a[f"{loss}_{li}_kappa"][c], a[f"{loss}_{li}_{key}"][c]
        ax.plot(k, y, ".", ms=2, alpha=0.4, color=LOSS_COLORS.get(loss), label=loss.upper())
        if key == "sigma":
            f = meta["envelope_fits"][f"{loss}_{li}"]
            xs = np.geomspace(max(k[k > 0].min(), 1e-6), k.max(), 50)
            ax.plot(xs, f["c"] * xs ** f["a"], "-", lw=1, color=LOSS_COLORS.get(loss))
    if key == "sigma":
        c = a[f"mse_{li}_certified"]
        ax.plot(a[f"mse_{li}_kappa"][c], a[f"mse_{li}_bound"][c], "x", ms=2, color="k",
                alpha=0.5, label="MSE bound κ·s_min(PB|1⊥)² (§4)")
        note(ax, _mse_note(a, li, c), loc=(0.35, 0.03))
    ax.set(xscale="log", yscale="log", xlabel="κ_m* (weakest label contrast)",
           ylabel="σ_m* (weakest logit contrast)" if key == "sigma" else "s_min centred prototypes",
           title=f"λW = λH = {lam:g}")
    ax.legend(fontsize=7, markerscale=4, loc="upper left")


def plot(a, meta):
    L = len(meta["config"]["lambdas"])
    fig, axes = plt.subplots(2, L, figsize=(6.5 * L, 10), squeeze=False)
    for li in range(L):
        _scatter(axes[0, li], a, meta, li, "sigma")
        _scatter(axes[1, li], a, meta, li, "smin")
    fits = "; ".join(f"{k}: σ ≥ {f['c']:.3g} κ^{f['a']:.2f}" for k, f in
                     meta["envelope_fits"].items() if not k.startswith("mse"))
    cert = np.concatenate([a[f"{lo}_{li}_certified"] for lo in LOSSES for li in range(L)])
    return finish(fig, f"κ_m as a lower bound of the terminal geometry, d = K; "
                       f"{certified_note(cert)}\nhull fits: {fits}")
