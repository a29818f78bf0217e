"""Training a network on real inputs, to compare its last layer with the UFM
(`networks.comparison`; THEORY §2, §3, §7).

The network is a backbone `h_θ(x) ∈ R^d` (standardised inputs, `depth` hidden layers of
`width` units with a smooth activation, then a linear feature layer to `R^d`) and a linear
classifier `(W, b)`, trained full batch on

    F_net(θ, W, b) = (1/N) Σ_i ℓ(W h_θ(x_i) + b, y_i) + λ_W/2 ‖W‖² + λ_H/(2N) Σ_i ‖h_θ(x_i)‖²
                     + λ_θ/2 ‖θ‖²

with the package's losses (`mlnc_jax.model.losses`). `‖θ‖²` sums the squares of every backbone
parameter (weights and biases of all layers). The data and regulariser terms are the
per-sample UFM objective of THEORY §2 evaluated at the network's features
(`ufm.per_sample_objective`), so with `λ_θ = 0`

    F_net ≥ F(W, μ, b) ≥ F*_UFM,

`μ` the label-set means of the features: the first inequality is Jensen's (the loss is
convex in the logits, which are affine in `h`, and `‖h‖²` is convex), the second is the
definition of the reduced UFM optimum `F*` (same `λ_W`, `λ_H`, `d`, label distribution =
the empirical one of the training set). Equality in the first needs NC1 (every sample on
its set's mean), in the second the UFM geometry.

Training: Adam (float64, full batch) for a fixed number of steps, then L-BFGS (optax, zoom
line search, float64) until the objective stops decreasing: `patience` consecutive
iterations with a decrease `≤ rtol·|F|` (the terminal phase), or an iteration budget.
Both phases run as compiled loops between log-spaced record points, where an optional
`observe(params)` callback measures whatever the caller wants (NC1, errors against the UFM).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from ..engine import interrupts
from ..model.errors import InputError
from ..model.losses import LOSSES, get_loss
from ..model.ufm import UFMConfig, UFMParams, per_sample_objective

__all__ = [
    "ACTIVATIONS", "MLPConfig", "NetParams", "TrainConfig", "TrainTrace", "TrainResult",
    "standardize", "init_network", "subsample", "features", "network_objective", "adam_step",
    "train", "log_points",
]

ACTIVATIONS = {"tanh": jnp.tanh, "softplus": jax.nn.softplus, "gelu": jax.nn.gelu}


# -- data ------------------------------------------------------------------------------------


def subsample(labels, num: int, seed: int = 0) -> np.ndarray:
    """Indices of a random subset of about `num` samples (all when `num ≥ N`) in which every
    class that occurs in `labels` occurs at least twice (a class absent from the training
    labels leaves PAL and BCE without a minimiser, THEORY §2b): for each under-represented
    class, samples holding it are added from the rest of the permutation."""
    Y = np.asarray(labels)
    N = Y.shape[0]
    perm = np.random.default_rng(seed).permutation(N)
    if num >= N:
        return np.sort(perm)
    take, rest = list(perm[:num]), list(perm[num:])
    for k in range(Y.shape[1]):
        need = min(2, int(Y[:, k].sum())) - int(Y[take, k].sum())
        for i in [i for i in rest if Y[i, k]][:max(need, 0)]:
            take.append(i)
            rest.remove(i)
    return np.sort(np.asarray(take))


def standardize(X):
    """`(X − mean)/std` per column (std of a constant column taken as 1)."""
    X = np.asarray(X, np.float64)
    sd = X.std(0)
    return (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)


# -- the network -----------------------------------------------------------------------------


class MLPConfig(NamedTuple):
    """Backbone shape: `depth` hidden layers of `width` units, then a linear map to `R^dim`."""

    width: int
    depth: int = 2
    dim: int = 16
    activation: str = "tanh"


class NetParams(NamedTuple):
    """`layers`: tuple of `(A [in, out], c [out])`, the hidden layers then the linear feature
    layer (the backbone `θ`); classifier `W [K, d]`, `b [K]`."""

    layers: tuple
    W: jax.Array
    b: jax.Array


class TrainConfig(NamedTuple):
    """Objective (loss, `λ_W`, `λ_H`, `λ_θ`) and optimiser budget (hashable: a jit static).
    `loss` is a name of `LOSSES` or any `Loss` record (`Loss.from_function`)."""

    loss: Any
    lambda_w: float
    lambda_h: float
    lambda_theta: float = 0.0
    adam_steps: int = 2000
    learning_rate: float = 1e-3
    lbfgs_steps: int = 2000
    rtol: float = 1e-12
    patience: int = 20
    num_records: int = 24

    def ufm_config(self, dim: int) -> UFMConfig:
        """The UFM with the same loss, `λ_W`, `λ_H` and feature dimension (free bias)."""
        return UFMConfig(self.loss, int(dim), float(self.lambda_w), float(self.lambda_h)).validate()


def init_network(key, in_dim: int, num_classes: int, mlp: MLPConfig, dtype=jnp.float64) -> NetParams:
    """LeCun-normal weights (variance 1/fan_in), zero biases."""
    sizes = [in_dim] + [mlp.width] * mlp.depth + [mlp.dim]
    keys = jax.random.split(key, len(sizes))
    layers = tuple(
        (jax.random.normal(k, (a, b_), dtype) / math.sqrt(a), jnp.zeros((b_,), dtype))
        for k, a, b_ in zip(keys[:-1], sizes[:-1], sizes[1:]))
    W = jax.random.normal(keys[-1], (num_classes, mlp.dim), dtype) / math.sqrt(mlp.dim)
    return NetParams(layers, W, jnp.zeros((num_classes,), dtype))


def features(layers, X, activation: str = "tanh"):
    """`h_θ(X)`, `[N, d]`: hidden layers with the activation, last layer linear."""
    act = ACTIVATIONS[activation]
    x = X
    for A, c in layers[:-1]:
        x = act(x @ A + c)
    A, c = layers[-1]
    return x @ A + c


def _sq(tree):
    return sum(jnp.sum(v**2) for v in jax.tree_util.tree_leaves(tree))


def network_objective(params: NetParams, X, Y, mlp: MLPConfig, tc: TrainConfig):
    """`F_net` of the module docstring: the per-sample UFM objective at the network's
    features (`ufm.per_sample_objective`) plus `λ_θ/2 ‖θ‖²`."""
    H = features(params.layers, X, mlp.activation)
    F = per_sample_objective(UFMParams(params.W, H, params.b), Y, tc.ufm_config(mlp.dim))
    return F + 0.5 * tc.lambda_theta * _sq(params.layers)


def _loss_table(loss) -> tuple:
    """The losses one compiled program switches over: the registered `LOSSES` when `loss` is
    one of them (runs that differ only in the loss share a program), else the record alone."""
    record = get_loss(loss)
    table = tuple(LOSSES.values())
    return table if record in table else (record,)


class _Dyn(NamedTuple):
    """The traced part of a TrainConfig: runs on one data shape share one compiled program
    whatever their loss and λ's."""

    loss_index: jax.Array
    lambda_w: jax.Array
    lambda_h: jax.Array
    lambda_theta: jax.Array


def _dyn(tc: TrainConfig) -> _Dyn:
    record = get_loss(tc.loss)
    return _Dyn(jnp.asarray(_loss_table(record).index(record), jnp.int32),
                *(jnp.asarray(float(v), jnp.float64) for v in (tc.lambda_w, tc.lambda_h, tc.lambda_theta)))


def _static(tc: TrainConfig) -> TrainConfig:
    """What the compiled loops depend on: the optimiser settings and the loss table."""
    return TrainConfig(_loss_table(tc.loss), 1.0, 1.0, 0.0, 0, tc.learning_rate, 0, tc.rtol, tc.patience, 0)


def _objective(params, X, Y, mlp, dyn: _Dyn, table: tuple):
    """`network_objective` with the loss chosen by a traced index into `table`
    (`lax.switch`) and traced λ's: the same value (checked in the tests)."""
    H = features(params.layers, X, mlp.activation)
    z = H @ params.W.T + params.b
    loss = lambda zi, yi: jax.lax.switch(dyn.loss_index, list(table), zi, yi)
    data = jnp.mean(jax.vmap(loss)(z, Y))
    reg = 0.5 * dyn.lambda_w * jnp.sum(params.W**2) \
        + 0.5 * dyn.lambda_h * jnp.sum(H**2) / H.shape[0]
    return data + reg + 0.5 * dyn.lambda_theta * _sq(params.layers)


def _adam(tc: TrainConfig):
    return optax.adam(tc.learning_rate)


def _lbfgs():
    return optax.lbfgs(memory_size=20,
                       linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=30))


def adam_step(params: NetParams, opt_state, X, Y, mlp: MLPConfig, tc: TrainConfig):
    """One full-batch Adam step: `(params, opt_state, F_net before the step)` (compiled)."""
    return _adam_step(params, opt_state, X, Y, mlp, _static(tc), _dyn(tc))


@partial(jax.jit, static_argnames=("mlp", "tc"))
def _adam_step(params, opt_state, X, Y, mlp, tc, dyn):
    value, g = jax.value_and_grad(_objective)(params, X, Y, mlp, dyn, tc.loss)
    updates, opt_state = _adam(tc).update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value


_value = jax.jit(_objective, static_argnames=("mlp", "table"))


@partial(jax.jit, static_argnames=("mlp", "tc"))
def _adam_run(params, opt_state, X, Y, num_steps, mlp, tc, dyn):
    def body(_, c):
        p, s = c
        p, s, _ = _adam_step(p, s, X, Y, mlp, tc, dyn)
        return p, s
    return jax.lax.fori_loop(0, num_steps, body, (params, opt_state))


@partial(jax.jit, static_argnames=("mlp", "tc"))
def _lbfgs_run(params, state, stall, fprev, X, Y, num_steps, mlp, tc, dyn):
    """L-BFGS iterations until `num_steps` or `patience` stalled iterations (in a row)."""
    f = lambda p: _objective(p, X, Y, mlp, dyn, tc.loss)
    opt = _lbfgs()
    vg = optax.value_and_grad_from_state(f)

    def cond(c):
        _, _, k, stall, fprev = c
        return (k < num_steps) & (stall < tc.patience) & jnp.isfinite(fprev)

    def body(c):
        p, s, k, stall, fprev = c
        value, grad = vg(p, state=s)
        updates, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=f)
        p = optax.apply_updates(p, updates)
        fnew = otu.tree_get(s, "value")
        stall = jnp.where(fprev - fnew <= tc.rtol * jnp.abs(fnew), stall + 1, jnp.zeros_like(stall))
        return p, s, k + 1, stall, fnew

    return jax.lax.while_loop(cond, body, (params, state, jnp.asarray(0, jnp.int32), stall, fprev))


def _strong(tree):
    """The same arrays without weak types, so that the first compiled call and the later ones
    (fed with the loop's own outputs) share one program."""
    return jax.tree_util.tree_map(lambda x: jnp.array(x, dtype=x.dtype), tree)


def log_points(total: int, num: int) -> np.ndarray:
    """About `num` distinct integers in `[0, total]`, log-spaced, always with 0 and `total`."""
    if total <= 0:
        return np.zeros(1, dtype=int)
    pts = np.unique(np.round(np.geomspace(1, total, max(num - 1, 1))).astype(int))
    return np.concatenate([[0], pts])


class TrainTrace(NamedTuple):
    """Records at log-spaced steps: global `step` (Adam steps, then Adam + L-BFGS
    iterations), `phase` (0 Adam, 1 L-BFGS), `objective`, and the rows returned by
    `observe` (`[R, m]`, empty when no callback)."""

    step: np.ndarray
    phase: np.ndarray
    objective: np.ndarray
    observed: np.ndarray


class TrainResult(NamedTuple):
    """`params` after training; `objective` `F_net`; `adam_steps`, `lbfgs_steps` taken;
    `terminal`: the L-BFGS stopping rule (objective no longer decreasing) was met within
    budget; `trace`."""

    params: NetParams
    objective: float
    adam_steps: int
    lbfgs_steps: int
    terminal: bool
    trace: TrainTrace


def train(X, Y, mlp: MLPConfig, tc: TrainConfig, *, seed: int = 0,
          observe: Callable[[NetParams], object] | None = None) -> TrainResult:
    """Train from `init_network(PRNGKey(seed))` on standardised `X [N, F]`, labels `Y [N, K]`
    (see the module docstring). Needs float64 enabled (`mlnc_jax.enable_x64()`)."""
    if not jax.config.jax_enable_x64:
        raise InputError("train needs float64: call jax.config.update('jax_enable_x64', True) first")
    Xs = jnp.asarray(standardize(X))
    Yj = jnp.asarray(Y, jnp.float64)
    params = init_network(jax.random.PRNGKey(seed), Xs.shape[1], Yj.shape[1], mlp)
    st, lt = _static(tc), _dyn(tc)
    rec = {"step": [], "phase": [], "objective": [], "observed": []}

    def record(p, step, phase, value=None):
        interrupts.check()
        rec["step"].append(step)
        rec["phase"].append(phase)
        rec["objective"].append(float(_value(p, Xs, Yj, mlp, lt, st.loss) if value is None else value))
        if observe is not None:
            rec["observed"].append(np.asarray(observe(p), np.float64).reshape(-1))

    n_adam = int(tc.adam_steps)
    marks = log_points(n_adam, tc.num_records // 2)
    opt_state = _adam(tc).init(params)
    done = 0
    for m in marks:
        if m > done:
            params, opt_state = _adam_run(params, opt_state, Xs, Yj, int(m - done), mlp, st, lt)
            done = int(m)
        record(params, done, 0)
    state = _strong(_lbfgs().init(params))
    stall = jnp.asarray(0, jnp.int32)
    fprev = jnp.asarray(rec["objective"][-1], jnp.float64)
    taken = 0
    for m in log_points(int(tc.lbfgs_steps), tc.num_records - len(marks) + 1)[1:]:
        params, state, k, stall, fprev = _lbfgs_run(params, state, stall, fprev, Xs, Yj,
                                                    int(m - taken), mlp, st, lt)
        taken += int(k)
        record(params, n_adam + taken, 1)
        if int(stall) >= tc.patience or not np.isfinite(float(fprev)):
            break
    obs = np.stack(rec["observed"]) if rec["observed"] else np.zeros((len(rec["step"]), 0))
    trace = TrainTrace(np.asarray(rec["step"]), np.asarray(rec["phase"]),
                       np.asarray(rec["objective"]), obs)
    return TrainResult(params, float(rec["objective"][-1]), n_adam, taken,
                       bool(int(stall) >= tc.patience), trace)


# -- the comparison with the UFM -------------------------------------------------------------


