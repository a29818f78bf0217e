"""`python -m experiments --quick` regenerates every figure from results files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import FIGURES

ROOT = Path(__file__).resolve().parents[1]


# past the suite's per-test limit: the halves' own 1200 s limit reports which one hung
@pytest.mark.timeout(1500)
def test_quick_run_writes_results_and_figures(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    figs, res = tmp_path / "figs", tmp_path / "res"
    # two halves side by side: the quick run is mostly XLA compilation, one core per process
    halves = [FIGURES[0::2], FIGURES[1::2]]
    procs = [subprocess.Popen([sys.executable, "-m", "experiments", "--quick", "--only", *names,
                               "--figures-dir", str(figs), "--results-dir", str(res),
                               "--compile-cache", str(tmp_path / f"cache{i}")],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for i, names in enumerate(halves)]
    for p in procs:
        _, err = p.communicate(timeout=1200)
        assert p.returncode == 0, err[-3000:]
    for name in FIGURES:
        for ext in (".png", ".pdf"):
            assert (figs / f"{name}{ext}").stat().st_size > 10_000, name
        meta = json.loads((res / f"{name}.json").read_text())
        for key in ("config", "mlnc_jax_version", "jax_version", "device", "dtype", "wall_time_s"):
            assert key in meta, (name, key)
        assert meta["dtype"] == "float64" and meta["quick"] is True
        assert meta["not_certified"] == [], (name, meta["not_certified"][:3])  # THEORY §2c
        with np.load(res / f"{name}.npz") as f:
            assert len(f.files) > 0
    # the certified claims the figures rest on hold in the quick run too; the "final" keys
    # are the Newton engine started from each flow's end point
    with np.load(res / "convergence.npz") as a:
        for flow in ("", "euclidean_"):
            assert a[f"pal_{flow}final_certified"].all() and a[f"mse_{flow}final_certified"].all()
            assert np.max(np.abs(a[f"pal_{flow}final_certificate"] - 1)) <= 1e-6  # THEORY §3
            assert np.max(a[f"mse_{flow}final_gram_h_error"]) <= 1e-7            # THEORY §4
    with np.load(res / "phase_diagram.npz") as a:
        for i in (0, 1):
            assert np.array_equal(a[f"d{i}_mse_rank"], a[f"d{i}_closed_form_rank"])
            assert a[f"d{i}_mse_certified"].all() and a[f"d{i}_pal_certified"].all()
    with np.load(res / "symmetric_pal.npz") as a:
        assert a["pal_solver_certified"].all()
        rel = np.abs(a["pal_solver_objective"] - a["pal_predicted_objective_at_solver"])
        assert np.max(rel / np.abs(a["pal_predicted_objective_at_solver"])) <= 1e-9  # THEORY §5
    with np.load(res / "kappa_bound.npz") as a:
        for li in (0, 1):
            c = a[f"mse_{li}_certified"]
            cs, bd, sig = (a[f"mse_{li}_{k}"][c] for k in ("closed_sigma", "bound", "sigma"))
            # THEORY §4: σ_m = min_u (PBu)ᵀ C_m (PBu) ≥ κ_m s_min(PB|1⊥)², exactly; the closed
            # form and the bound differ only by the eigensolvers' round-off, K·ε·‖C_m‖ ≤ 20·2.2e-16
            assert np.all(cs >= bd - 1e-14)
            # a certified MSE solve's logits are within 1e-7 relative Frobenius of §4's (the
            # contract of tests/test_closed_forms.py); with |S| ≤ 3, Σ_k p_k² ≤ m̄ ≤ 3 and
            # T ≤ 2K ≤ 40 sets, centred logits ‖B(y − p_m)‖ ≤ √6 (‖B‖ ≤ 1) and ‖z‖ ≤ √6 + √3,
            # so each set's logits move by e ≤ 1e-7·√40·(√6 + √3), their centred values by 2e,
            # and the slice covariance's weakest contrast by |Δσ| ≤ 2√6·2e + (2e)²
            e = 2e-7 * np.sqrt(40) * (np.sqrt(6) + np.sqrt(3))
            assert np.all(np.abs(sig - cs) <= 2 * np.sqrt(6) * e + e**2)
    meta = json.loads((res / "network_vs_ufm.json").read_text())
    assert all(meta["ufm_certified"].values())                               # THEORY §2c
    with np.load(res / "network_vs_ufm.npz") as a:
        tol = 1e-9 * np.abs(a["ufm_objective"])          # λ_θ = 0: F_net ≥ F(means) ≥ F*
        assert np.all(a["net_objective"] >= a["means_objective"] - 1e-12)
        assert np.all(a["means_objective"] >= a["ufm_objective"] - tol)


def test_bad_figure_name_is_one_line_error(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "experiments", "--only", "nope"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "invalid choice" in p.stderr
    assert not (tmp_path / "figures").exists() and not (tmp_path / "results").exists()
