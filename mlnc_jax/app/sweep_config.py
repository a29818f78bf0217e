"""Sweep configurations: the grid a sweep file describes, validated completely (THEORY §1
generators, shipped tables, files) before anything is written.

`expand_sweep(config)` returns the manifest: every problem of the grid distributions ×
losses × λ_W × λ_H × seeds, the chunks (at most `chunk_size` problems sharing the loss, `K`
and the λ's) and a digest of each chunk's configuration. See `mlnc_jax.app.sweep` for the file
format and the run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path

import numpy as np

from ..io import schema
from ..model.errors import InputError
from ..model.labels import balanced, random_correlated, singleton_imbalance
from ..model.losses import LOSSES, get_loss

__all__ = ["expand_sweep", "canonical_json", "digest"]

GENERATORS = {"random_correlated": random_correlated, "singleton_imbalance": singleton_imbalance,
              "balanced": balanced}
KEYS = {"distributions", "losses", "dim", "lambda_w", "lambda_h", "lambda_b", "bias", "seeds",
        "tol", "chunk_size"}
# Python-level loops build generated distributions and the grid: bound them so that a typo
# (a range to 10**12) is refused at once instead of running out of memory.
MAX_GENERATED_SETS = 2_000_000
MAX_PROBLEMS = 1_000_000


def _int_arg(name, low=None):
    return lambda v, where: schema.check_int(v, f"{where}: {name}", low=low)


def _num_arg(name, positive=False):
    return lambda v, where: schema.check_number(v, f"{where}: {name}", positive=positive)


def _str_arg(name):
    def check(v, where):
        if not isinstance(v, str):
            raise InputError(f"{where}: {name} must be a string, got {v!r}")
        return v
    return check


def _mass_arg(v, where):
    """`{"m": mass}` with decimal-integer keys and non-negative numbers."""
    if not isinstance(v, dict):
        raise InputError(f"{where}: multiplicity_mass must be an object {{\"m\": mass}}, got {v!r}")
    out = {}
    for k, mass in v.items():
        if not (isinstance(k, str) and k.isdigit() and len(k) <= 9):
            raise InputError(f"{where}: multiplicity_mass keys must be integers >= 0, got {k!r}")
        out[int(k)] = schema.check_number(mass, f"{where}: multiplicity_mass[{k}]", nonnegative=True)
    return out


# generator → {argument: (checker, required)}
GENERATOR_ARGS = {
    "random_correlated": {"num_classes": (_int_arg("num_classes", 1), True),
                          "seed": (lambda v, w: schema.check_seed(v, f"{w}: seed"), True),
                          "max_multiplicity": (_int_arg("max_multiplicity", 1), False),
                          "concentration": (_num_arg("concentration", True), False),
                          "correlation": (_num_arg("correlation"), False)},
    "singleton_imbalance": {"num_classes": (_int_arg("num_classes", 1), True),
                            "ratio": (_num_arg("ratio"), True),
                            "kind": (_str_arg("kind"), False),
                            "multiplicity_mass": (_mass_arg, False),
                            "num_major": (_int_arg("num_major", 0), False)},
    "balanced": {"num_classes": (_int_arg("num_classes", 1), True),
                 "multiplicity_mass": (_mass_arg, True)},
}


def _as_list(v, name):
    """A value, a list of values, or `{"range": [start, stop, step]}` → list (bounded)."""
    if isinstance(v, dict) and set(v) == {"range"}:
        r = v["range"]
        if not (isinstance(r, list) and len(r) in (1, 2, 3)
                and all(isinstance(x, int) and not isinstance(x, bool) for x in r)):
            raise InputError(f"{name}: 'range' takes [stop], [start, stop] or [start, stop, step] integers")
        if len(r) == 3 and r[2] == 0:
            raise InputError(f"{name}: 'range' step must not be 0")
        rng = range(*r)
        if len(rng) > MAX_PROBLEMS:
            raise InputError(f"{name}: 'range' has {len(rng)} values, more than {MAX_PROBLEMS}")
        return list(rng)
    return list(v) if isinstance(v, list) else [v]


def _number_list(cfg, key, default=None, positive=False):
    out = [schema.check_number(v, f"sweep {key}", positive=positive, nonnegative=True)
           for v in _as_list(cfg.get(key, default), key)]
    if not out:
        raise InputError(f"sweep {key} is empty")
    return out


def _generated_size(gen: str, kw: dict) -> int:
    """Number of label sets a generator call would build (before building it)."""
    K = kw["num_classes"]
    if gen == "random_correlated":
        ms = range(1, min(kw.get("max_multiplicity", 2), K) + 1)
    else:
        mm = kw.get("multiplicity_mass", {1: 0.7, 2: 0.3})
        ms = [m for m, v in mm.items() if v > 0 and m <= K]
        if gen == "singleton_imbalance":
            ms = sorted(set(ms) - {1}) + [1]
    total = 0
    for m in ms:
        total += math.comb(K, m) if m != 1 else K
        if total > MAX_GENERATED_SETS:
            break
    return total


def _expand_distribution(spec, base: Path, where: str):
    """A spec → list of (description, LabelDistribution)."""
    from ..io.real_labels import load_labels

    if isinstance(spec, str):
        return [(spec, load_labels(spec, base))]
    if not isinstance(spec, dict):
        raise InputError(f"{where} must be a file name, a table name or a generator object, got {spec!r}")
    if "generator" not in spec:
        return [("inline", schema.parse_distribution(spec))]
    gen = spec["generator"]
    if not isinstance(gen, str) or gen not in GENERATORS:
        raise InputError(f"unknown generator {gen!r}; choose one of {', '.join(GENERATORS)}")
    where = f"{where} ({gen})"
    allowed = GENERATOR_ARGS[gen]
    schema.expect_keys(spec, set(allowed) | {"generator"}, where)
    missing = [k for k, (_, req) in allowed.items() if req and k not in spec]
    if missing:
        raise InputError(f"{where} needs {', '.join(missing)}")
    args = {k: v for k, v in spec.items() if k != "generator"}
    # multiplicity_mass is an object value, never a list to expand
    listed = {k: _as_list(v, f"{where}: {k}") for k, v in args.items() if k != "multiplicity_mass"}
    for k, vals in listed.items():
        if not vals:
            raise InputError(f"{where}: {k} is an empty list")
    combos = math.prod(len(v) for v in listed.values())
    if combos > MAX_PROBLEMS:
        raise InputError(f"{where} expands to {combos} distributions, more than {MAX_PROBLEMS}")
    out = []
    for combo in itertools.product(*listed.values()):
        raw = dict(zip(listed, combo))
        if "multiplicity_mass" in args:
            raw["multiplicity_mass"] = args["multiplicity_mass"]
        kw = {k: allowed[k][0](v, where) for k, v in raw.items()}
        n = _generated_size(gen, kw)
        if n > MAX_GENERATED_SETS:
            raise InputError(f"{where} with num_classes = {kw['num_classes']} would build more than "
                             f"{MAX_GENERATED_SETS} label sets")
        schema.check_memory(schema.estimate_distribution_bytes(n, kw["num_classes"]),
                            f"{where} with num_classes = {kw['num_classes']}")
        d = GENERATORS[gen](**kw)
        desc = gen + "(" + ", ".join(f"{k}={raw[k]}" for k in sorted(raw)) + ")"
        out.append((desc, d))
    return out


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"no such {what}: {path}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON in {path}: {e.msg} (line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    except (ValueError, RecursionError) as e:
        raise InputError(f"malformed JSON in {path}: {str(e).splitlines()[0][:120]}") from None


def _load_config(config) -> tuple[dict, Path]:
    if isinstance(config, dict):
        return config, Path.cwd()
    path = Path(config)
    cfg = _read_json(path, "sweep file")
    if not isinstance(cfg, dict):
        raise InputError("a sweep file must hold a JSON object")
    return cfg, path.parent


def input_files(config) -> list[Path]:
    """The files a sweep reads: its config file and the distribution files it names."""
    if not isinstance(config, dict):
        try:
            cfg, base = _load_config(config)
        except InputError:
            return [Path(config)]
        files = [Path(config)]
    else:
        cfg, base, files = config, Path.cwd(), []
    for d in cfg.get("distributions", []) if isinstance(cfg.get("distributions"), list) else []:
        if isinstance(d, str):
            files.append(base / d)
    return files


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
    return h.hexdigest()


def _parse_losses(cfg) -> list:
    losses = _as_list(cfg.get("losses", ["pal"]), "losses")
    if not losses:
        raise InputError("sweep losses is empty")
    for loss in losses:
        if not isinstance(loss, str) or loss not in LOSSES:
            raise InputError(f"unknown loss {loss!r} in sweep; choose from {', '.join(LOSSES)}")
    return losses


def _parse_lambdas(cfg) -> tuple[list, list, float]:
    """λ_W and λ_H lists and the single λ_b, every pair checked with λ_b."""
    if "lambda_w" not in cfg or "lambda_h" not in cfg:
        raise InputError("sweep needs 'lambda_w' and 'lambda_h'")
    lw = _number_list(cfg, "lambda_w", positive=True)
    lh = _number_list(cfg, "lambda_h", positive=True)
    lb = _number_list(cfg, "lambda_b", 0.0)
    if len(lb) != 1:
        raise InputError("sweep 'lambda_b' must be one number")
    for a, b_ in itertools.product(lw, lh):
        schema.check_lambdas(a, b_, lb[0])
    return lw, lh, lb[0]


def _parse_grid(cfg) -> tuple[dict, dict]:
    """The grid's axes (losses, λ_W, λ_H, seeds) and the settings all its problems share."""
    unknown = set(cfg) - KEYS
    if unknown:
        raise InputError(f"unknown sweep key(s): {', '.join(sorted(map(str, unknown)))}")
    if "distributions" not in cfg or not isinstance(cfg["distributions"], list) or not cfg["distributions"]:
        raise InputError("sweep needs a non-empty list 'distributions'")
    losses = _parse_losses(cfg)
    if "dim" not in cfg:
        raise InputError("sweep needs 'dim' (an integer >= 1)")
    dim = schema.check_int(cfg["dim"], "sweep 'dim'", low=1)
    lw, lh, lb = _parse_lambdas(cfg)
    bias = cfg.get("bias", True)
    if not isinstance(bias, bool):
        raise InputError("sweep 'bias' must be true or false")
    seeds = [schema.check_seed(s, "sweep 'seeds'") for s in _as_list(cfg.get("seeds", [0]), "seeds")]
    if not seeds:
        raise InputError("sweep 'seeds' is empty")
    tol = schema.check_tol(cfg.get("tol", 1e-10), "sweep 'tol'")
    chunk = schema.check_count(cfg.get("chunk_size", 256), "sweep 'chunk_size'")
    axes = {"losses": losses, "lambda_w": lw, "lambda_h": lh, "seeds": seeds}
    settings = {"dim": dim, "lambda_b": lb, "bias": bias, "tol": float(tol), "chunk_size": chunk}
    return axes, settings


def _check_problems(axes: dict, settings: dict, dists: list) -> None:
    """Refuse a grid that is too large, or holds a configuration or a (loss, distribution)
    pair that cannot be solved."""
    from ..model.ufm import UFMConfig

    losses, lw, lh = axes["losses"], axes["lambda_w"], axes["lambda_h"]
    n_problems = len(losses) * len(lw) * len(lh) * len(axes["seeds"]) * len(dists)
    if n_problems > MAX_PROBLEMS:
        raise InputError(f"the sweep has {n_problems} problems, more than {MAX_PROBLEMS}")
    lb, bias = settings["lambda_b"], settings["bias"]
    for loss, a, b_ in itertools.product(losses, lw, lh):
        UFMConfig(loss, settings["dim"], a, b_, lb, bias).validate()
    for loss in losses:  # where the loss is undefined, or no minimiser exists (THEORY §2b)
        rule = get_loss(loss)
        for desc, d in dists:
            Y, w = np.asarray(d.label_sets), np.asarray(d.weights)
            msg = rule.domain_error(Y, w) or (rule.minimiser_error(Y, w)
                                              if bias and lb == 0 else None)
            if msg:
                raise InputError(f"{msg} ({loss}, {desc})")


def _plan_chunks(axes: dict, settings: dict, dists: list) -> tuple[list, list]:
    """The problems in grid order and the chunks (problem indices), each within memory."""
    problems = []
    groups: dict[tuple, list[int]] = {}
    for loss, a, b_, seed, (di, (desc, d)) in itertools.product(
            axes["losses"], axes["lambda_w"], axes["lambda_h"], axes["seeds"], enumerate(dists)):
        key = (loss, a, b_, d.num_classes)
        groups.setdefault(key, []).append(len(problems))
        problems.append({"distribution": di, "description": desc, "loss": loss, "lambda_w": a,
                         "lambda_h": b_, "seed": seed, "num_classes": d.num_classes,
                         "num_sets": d.num_sets})
    chunk, dim = settings["chunk_size"], settings["dim"]
    chunks = [idx[i:i + chunk] for idx in groups.values() for i in range(0, len(idx), chunk)]
    for idx in chunks:
        K = problems[idx[0]]["num_classes"]
        T = max(problems[j]["num_sets"] for j in idx)
        schema.check_memory(schema.estimate_solve_bytes(K, T, dim, batch=len(idx)),
                            f"a sweep chunk of {len(idx)} problems with K = {K}, dim = {dim}")
    return problems, chunks


def _manifest(settings: dict, problems: list, chunks: list, dists: list) -> dict:
    dist_dicts = [d.to_dict() for _, d in dists]
    canon = canonical_json({"settings": settings, "problems": problems, "distributions": dist_dicts})
    # what a chunk's numbers depend on: settings, its problems and their distributions
    digests = [digest(canonical_json({"settings": settings, "problems": [problems[j] for j in idx],
                            "distributions": [dist_dicts[problems[j]["distribution"]] for j in idx]}))
               for idx in chunks]
    return {"settings": settings, "problems": problems, "chunks": chunks, "chunk_digests": digests,
            "distributions": [{"description": desc, **dd} for (desc, _), dd in zip(dists, dist_dicts)],
            "sweep_hash": digest(canon)}


def expand_sweep(config) -> dict:
    """Validate a sweep config and expand its grid. Returns the manifest (a dict) with
    `problems` (one entry per problem), `chunks` (lists of problem indices), a digest of
    each chunk's configuration (`chunk_digests`) and the distributions. Writes nothing."""
    cfg, base = _load_config(config)
    axes, settings = _parse_grid(cfg)
    dists = [d for i, spec in enumerate(cfg["distributions"])
             for d in _expand_distribution(spec, base, f"sweep distribution #{i}")]
    _check_problems(axes, settings, dists)
    problems, chunks = _plan_chunks(axes, settings, dists)
    return _manifest(settings, problems, chunks, dists)
