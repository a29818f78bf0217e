"""The baseline of the benchmarks: a straightforward optax L-BFGS loop on the reduced UFM.

A jit-compiled `while_loop` of `optax.lbfgs` (zoom line search) on `F(W, U, b)`,
`U_s = √π_s h_s` (THEORY §2), until the package's own stopping test holds (every relative
block residual of THEORY §2c within `tol`, `mlnc_jax.engine.newton.block_residual`) or `max_iter`:
the same tolerance as the Newton engine. This is what a user would write without it.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax

import mlnc_jax as mj
from mlnc_jax.engine.newton import Problem, block_residual, value_grad


def _objective(x, Y, w, config):
    inv = jnp.where(w > 0, 1.0 / jnp.sqrt(jnp.where(w > 0, w, 1.0)), 0.0)
    return mj.objective(x._replace(H=x.H * inv[:, None]), Y, w, config)


def _residual(x, prob, config):
    f, gW, gU, gb, G, _ = value_grad(x.W, x.H, x.b, prob, config.loss_record, config.bias)
    return block_residual(x.W, x.H, x.b, gW, gU, gb, G, prob, config.bias)


@partial(jax.jit, static_argnames=("config", "max_iter"))
def _run(x0, Y, w, config, tol, max_iter):
    f = lambda x: _objective(x, Y, w, config)
    opt = optax.lbfgs(memory_size=20,
                      linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=40))
    vg = optax.value_and_grad_from_state(f)
    prob = Problem(Y, w, jnp.stack([config.lambda_w, config.lambda_h, config.lambda_b]))

    def body(c):
        x, state, k, _ = c
        value, grad = vg(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        x = optax.apply_updates(x, updates)
        return x, state, k + 1, _residual(x, prob, config)

    cond = lambda c: (c[2] < max_iter) & (c[3] > tol) & jnp.isfinite(c[3])
    x, _, k, _ = jax.lax.while_loop(cond, body, (x0, opt.init(x0), 0, _residual(x0, prob, config)))
    return x, k


def lbfgs(params: mj.UFMParams, dist, config: mj.UFMConfig, tol=1e-10, max_iter=100000):
    """L-BFGS from `params` (`W, H, b`); returns `(params, iterations)`. Needs x64 on."""
    Y, w = jnp.asarray(dist.label_sets), jnp.asarray(dist.weights)
    x0 = params._replace(H=params.H * jnp.sqrt(w)[:, None])
    x, k = _run(x0, Y, w, config.validate(), jnp.asarray(tol), int(max_iter))
    inv = jnp.where(w > 0, 1.0 / jnp.sqrt(jnp.where(w > 0, w, 1.0)), 0.0)
    return x._replace(H=x.H * inv[:, None]), int(k)
