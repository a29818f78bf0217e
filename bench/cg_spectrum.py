"""Where the matrix-free path's Hessian products go, and whether deflation would save them.

One shipped label space and loss (d = K, λ_W = λ_H = 5e-3, tol 1e-10, float64, the seeded
random start), solved step by step on the matrix-free path. Reported:

* per Newton step: the block residual after it and the CG iterations it spent;
* at the certified optimum: the rank of `W` (singular values above 1e-6 of the largest),
  and the extreme Ritz values of the Hessian, unpreconditioned and with the shipped rotated
  Jacobi preconditioner (`--lanczos` steps of Lanczos with full reorthogonalisation,
  started in the Hessian's range, which excludes the rotation null space);
* on the Newton systems of the last steps (residual below 0.1): CG iterations to the
  engine's forcing tolerance with the shipped preconditioner, and with the system deflated
  (Saad et al. 2000, deflated PCG) by the `m` smallest Ritz vectors of the optimum's
  preconditioned Hessian, `m` from `--deflate`, and the share of the preconditioned
  right-hand side in their span. Deflation costs `m + 1` extra products per system,
  reported apart. A check that the deflation works: the same on the optimum's own system
  with a random right-hand side in its range, to 1e-6.

Usage: python bench/cg_spectrum.py LABELS LOSS [--lanczos 500] [--deflate 10 40 160]
       [--out bench/cg_spectrum.jsonl]   (appends one JSON line with the run's metadata)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import mlnc_jax as mj  # noqa: E402
from mlnc_jax.engine.cg import forcing_term
from mlnc_jax.engine.hessian import rotated_system
from mlnc_jax.engine.newton import Problem, init_state, newton_step
from mlnc_jax.engine.starts import random_start, reduce_rows
from mlnc_jax.io.results import run_metadata
from mlnc_jax.model.losses import get_loss

LAM, TOL = 5e-3, 1e-10


def run_steps(name, loss_name):
    """Newton steps of the matrix-free path; the states whose residual is below 0.1."""
    dist = mj.load_real(name)
    K = dist.num_classes
    Y, w, _ = reduce_rows(dist)
    W0, H0, b0 = random_start(0, K, w.shape[0], mj.UFMConfig(loss_name, K, LAM, LAM), 0.1)
    loss = get_loss(loss_name)
    prob = Problem(jnp.asarray(Y), jnp.asarray(w), jnp.asarray([LAM, LAM, 0.0]))
    st = jax.jit(lambda W, U, b: init_state(W, U, b, prob, TOL, 1.0, loss, True))(
        W0, H0 * np.sqrt(w)[:, None], b0)
    step = jax.jit(lambda s: newton_step(s, prob, TOL, 500, loss, True, 1024, "matrix_free"))
    trace, local = [], []
    while not bool(st.done | st.stalled) and int(st.steps) < 500:
        before = int(st.cg_total)
        st = step(st)
        trace.append((float(st.residual), int(st.cg_total) - before))
        if float(st.residual) < 0.1:
            local.append(st)
    return prob, loss, st, trace, local


def system(st, prob, loss):
    """The damped Newton system of state `st` in the engine's rotated frame
    (`hessian.rotated_system`), flattened: `A`, the inverse preconditioner diagonal,
    the right-hand side, the frame and the unflattening map."""
    Q, hvp, diag, g = rotated_system(st, prob, loss, True, st.theta * st.gnorm)
    g, unravel = ravel_pytree(g)
    minv = 1 / ravel_pytree(diag)[0]
    A = jax.jit(lambda v: ravel_pytree(hvp(unravel(v)))[0])
    return A, minv, -g, Q, unravel


def pcg(A, minv, rhs, eta, maxit, Z=None):
    """Iterations of (deflated) PCG to `‖r‖ ≤ η‖rhs‖`, and the products deflation adds.
    One loop for both variants, so they differ only by the deflation; without it, it stops
    where the engine's `cg.truncated_cg` does (the same test and preconditioner)."""
    x, extra, proj = jnp.zeros_like(rhs), 0, (lambda v: v)
    r = rhs
    if Z is not None:
        AZ = jnp.stack([A(c) for c in Z.T], 1)
        Einv = jnp.linalg.pinv(Z.T @ AZ, rtol=1e-12)
        x = Z @ (Einv @ (Z.T @ rhs))
        r = rhs - A(x)
        extra = Z.shape[1] + 1
        proj = lambda v: v - Z @ (Einv @ (AZ.T @ v))
    z = minv * r
    p, rz, nb = proj(z), r @ z, jnp.linalg.norm(rhs)
    for k in range(maxit):
        if jnp.linalg.norm(r) <= eta * nb:
            return k, extra
        Ap = A(p)
        a = rz / (p @ Ap)
        x, r = x + a * p, r - a * Ap
        z = minv * r
        rz1 = r @ z
        p, rz = proj(z) + (rz1 / rz) * p, rz1
    return maxit, extra


def lanczos(op, n, its, seed=0):
    """Ritz values and vectors of the symmetric `op` (full reorthogonalisation), started
    from `op(random)`: in the range of `op`."""
    V = np.zeros((its + 1, n))
    q = np.asarray(op(jax.random.normal(jax.random.PRNGKey(seed), (n,))))
    V[0] = q / np.linalg.norm(q)
    alpha, beta = np.zeros(its), np.zeros(its)
    for j in range(its):
        v = np.array(op(jnp.asarray(V[j])))
        alpha[j] = V[j] @ v
        for _ in range(2):
            v -= V[: j + 1].T @ (V[: j + 1] @ v)
        beta[j] = np.linalg.norm(v)
        V[j + 1] = v / beta[j]
    T = np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1)
    ev, S = np.linalg.eigh(T)
    return ev, V[:its].T @ S


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels")
    ap.add_argument("loss")
    ap.add_argument("--lanczos", type=int, default=500)
    ap.add_argument("--deflate", type=int, nargs="+", default=[10, 40, 160])
    ap.add_argument("--out", default=os.path.join(HERE, "cg_spectrum.jsonl"))
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    prob, loss, st, trace, local = run_steps(a.labels, a.loss)
    sv = np.linalg.svd(np.asarray(st.W), compute_uv=False)
    rec = {"labels": a.labels, "loss": a.loss, "K": int(st.W.shape[0]), "T": int(st.U.shape[0]),
           "certified_residual": float(st.residual), "steps": len(trace),
           "products": int(st.cg_total), "trace": trace,
           "rank_W": int((sv > 1e-6 * sv[0]).sum()), "smallest_active_sv": float(sv[sv > 1e-6 * sv[0]][-1])}
    A, minv, _, Qopt, _ = system(st, prob, loss)
    s = jnp.sqrt(minv)
    ritz = {}
    for pname, op in (("none", A), ("jacobi", lambda v: s * A(s * v))):
        ev, X = lanczos(op, minv.shape[0], a.lanczos)
        ritz[pname] = {"max": float(ev[-1]), "smallest": ev[:12].tolist(),
                       "below_max_times": {str(t): int((ev < t * ev[-1]).sum())
                                           for t in (1e-2, 1e-3, 1e-4)}}
        if pname == "jacobi":
            m = max(a.deflate)
            Xopt, Zopt = X[:, :m], np.asarray(s)[:, None] * X[:, :m]
            # how well the Ritz pairs are converged: ‖op x − θx‖ / θ for the 1st and m-th
            ritz[pname]["pair_residuals"] = [
                float(np.linalg.norm(np.asarray(op(jnp.asarray(X[:, i]))) - ev[i] * X[:, i]) / ev[i])
                for i in (0, m - 1)]
    rec["ritz"] = ritz
    # deflation on the optimum's own system, a right-hand side in the range, to 1e-6
    rhs = A(jax.random.normal(jax.random.PRNGKey(1), minv.shape))
    rec["optimum_random_rhs"] = {"shipped": pcg(A, minv, rhs, 1e-6, 3000)[0]}
    for m in a.deflate:
        rec["optimum_random_rhs"][f"deflated_{m}"] = list(pcg(A, minv, rhs, 1e-6, 3000, jnp.asarray(Zopt[:, :m])))
    print(json.dumps(rec["optimum_random_rhs"]), flush=True)
    systems = []
    for i in sorted({0, len(local) // 2, len(local) - 3, len(local) - 2}):
        if not 0 <= i < len(local) - 1:
            continue
        sti = local[i]
        A, minv, rhs, Q, unravel = system(sti, prob, loss)
        R = Qopt.T @ Q  # the optimum's frame to this state's (both rotate the columns)

        def to_frame(v, unravel=unravel, R=R):
            dW, dU, db = unravel(jnp.asarray(v))
            return ravel_pytree((dW @ R, dU @ R, db))[0]

        Z = jnp.stack([to_frame(c) for c in Zopt.T], 1)
        eta = float(forcing_term(sti.residual, TOL))
        # the share of the preconditioned right-hand side in the span of the m Ritz vectors
        srhs = jnp.sqrt(minv) * rhs
        Xs = jnp.stack([to_frame(c) for c in Xopt.T], 1)
        share = {str(m): float(jnp.sum((Xs[:, :m].T @ srhs) ** 2) / (srhs @ srhs)) for m in a.deflate}
        row = {"residual": float(sti.residual), "eta": eta, "rhs_share": share,
               "shipped": pcg(A, minv, rhs, eta, 3000)[0]}
        for m in a.deflate:
            k, extra = pcg(A, minv, rhs, eta, 3000, Z[:, :m])
            row[f"deflated_{m}"] = [k, extra]
        systems.append(row)
        print(json.dumps(row), flush=True)
    rec["systems"] = systems
    rec["wall_s"] = time.perf_counter() - t0
    rec["meta"] = run_metadata(command="bench/cg_spectrum.py " + " ".join(argv or sys.argv[1:]))
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps({k: v for k, v in rec.items() if k not in ("trace", "meta")}))


if __name__ == "__main__":
    main()
