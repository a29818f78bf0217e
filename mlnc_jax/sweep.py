"""Resumable parameter sweeps: `mlnc-jax sweep --config SWEEP.json --out DIR`.

A sweep is the grid distributions × losses × λ_W × λ_H × seeds. It is cut into chunks of at
most `chunk_size` problems that share the loss, `K` and the λ's, and each chunk is solved in
one batched program (`mlnc_jax.solve_batch`). Each finished chunk is written to
`DIR/chunk-NNNNN.npz` plus `DIR/chunk-NNNNN.json` (metadata with the SHA-256 of the npz,
written last, so it marks completion). On a rerun, chunks whose files exist and check out
are skipped; a missing, partial or corrupt chunk is recomputed. An interrupt loses at most
the running chunk. `DIR/manifest.json` lists every problem of the grid.

Sweep file (JSON)::

    {
      "distributions": [
        "dist.json",                                  # a distribution file
        "voc2007_trainval",                           # a shipped real table
        {"generator": "random_correlated", "num_classes": 10, "seed": {"range": [0, 64]},
         "max_multiplicity": 2},                      # list/range values expand
        {"generator": "singleton_imbalance", "num_classes": 6, "ratio": [1, 10, 100]},
        {"generator": "balanced", "num_classes": 5, "multiplicity_mass": {"1": 0.5, "2": 0.5}}
      ],
      "losses": ["pal", "mse"], "dim": 16,
      "lambda_w": [0.005, 0.01], "lambda_h": 0.005, "lambda_b": 0.0, "bias": true,
      "seeds": [0, 1], "tol": 1e-10, "chunk_size": 256
    }

Results: each chunk npz holds `W [B,K,d]`, `H [B,T,d]` (rows in each distribution's order,
zero padding after), `b`, `objective`, `grad_norm`, `certificate`, `converged`, `steps`,
`mask`, and `problem` (indices into the manifest). `load_sweep(DIR)` gathers them.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .labels import LabelDistribution, balanced, random_correlated, singleton_imbalance
from .losses import LOSSES
from .results_io import run_metadata, write_json_atomic

__all__ = ["expand_sweep", "run_sweep", "load_sweep", "add_sweep_parser", "sweep_command"]

GENERATORS = {"random_correlated": random_correlated, "singleton_imbalance": singleton_imbalance,
              "balanced": balanced}
KEYS = {"distributions", "losses", "dim", "lambda_w", "lambda_h", "lambda_b", "bias", "seeds",
        "tol", "chunk_size"}


def _as_list(v, name):
    if isinstance(v, dict) and set(v) == {"range"}:
        r = v["range"]
        if not (isinstance(r, list) and len(r) in (1, 2, 3) and all(isinstance(x, int) for x in r)):
            raise InputError(f"{name}: 'range' takes [stop], [start, stop] or [start, stop, step] integers")
        return list(range(*r))
    return list(v) if isinstance(v, list) else [v]


def _number_list(cfg, key, default=None, positive=False):
    vals = _as_list(cfg.get(key, default), key)
    out = []
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0 \
                or (positive and v == 0):
            raise InputError(f"sweep {key} must be {'positive' if positive else 'non-negative'} "
                             f"numbers, got {v!r}")
        out.append(float(v))
    if not out:
        raise InputError(f"sweep {key} is empty")
    return out


def _expand_distribution(spec, base: Path):
    """A spec → list of (description, LabelDistribution)."""
    from .real_labels import load_labels

    if isinstance(spec, str):
        return [(spec, load_labels(spec, base))]
    if not isinstance(spec, dict):
        raise InputError(f"a distribution must be a file name, a table name or a generator object, got {spec!r}")
    if "generator" not in spec:
        return [("inline", LabelDistribution.from_dict(spec))]
    gen = spec["generator"]
    if gen not in GENERATORS:
        raise InputError(f"unknown generator {gen!r}; choose one of {', '.join(GENERATORS)}")
    args = {k: v for k, v in spec.items() if k != "generator"}
    if "multiplicity_mass" in args:
        mm = args["multiplicity_mass"]
        if not isinstance(mm, dict):
            raise InputError("multiplicity_mass must be an object {\"m\": mass}")
        try:
            args["multiplicity_mass"] = {int(k): v for k, v in mm.items()}
        except ValueError:
            raise InputError("multiplicity_mass keys must be integers") from None
    scalar = {k: v for k, v in args.items() if k == "multiplicity_mass" or not isinstance(v, (list, dict))}
    listed = {k: _as_list(v, k) for k, v in args.items() if k not in scalar}
    out = []
    for combo in itertools.product(*listed.values()) if listed else [()]:
        kw = {**scalar, **dict(zip(listed, combo))}
        try:
            d = GENERATORS[gen](**kw)
        except TypeError as e:
            raise InputError(f"generator {gen}: {e}") from None
        desc = gen + "(" + ", ".join(f"{k}={kw[k]}" for k in sorted(kw)) + ")"
        out.append((desc, d))
    return out


def _load_config(config) -> tuple[dict, Path]:
    if isinstance(config, dict):
        return config, Path.cwd()
    path = Path(config)
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"no such sweep file: {path}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON in {path}: {e.msg} (line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    if not isinstance(cfg, dict):
        raise InputError("a sweep file must hold a JSON object")
    return cfg, path.parent


def expand_sweep(config) -> dict:
    """Validate a sweep config and expand its grid. Returns the manifest (a dict) with
    `problems` (one entry per problem), `chunks` (lists of problem indices) and the
    distributions."""
    cfg, base = _load_config(config)
    unknown = set(cfg) - KEYS
    if unknown:
        raise InputError(f"unknown sweep key(s): {', '.join(sorted(unknown))}")
    if "distributions" not in cfg or not isinstance(cfg["distributions"], list) or not cfg["distributions"]:
        raise InputError("sweep needs a non-empty list 'distributions'")
    losses = _as_list(cfg.get("losses", ["pal"]), "losses")
    for loss in losses:
        if loss not in LOSSES:
            raise InputError(f"unknown loss {loss!r} in sweep; choose from {', '.join(LOSSES)}")
    dim = cfg.get("dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise InputError(f"sweep 'dim' must be an integer >= 1, got {dim!r}")
    lw = _number_list(cfg, "lambda_w", positive=True) if "lambda_w" in cfg else None
    lh = _number_list(cfg, "lambda_h", positive=True) if "lambda_h" in cfg else None
    if lw is None or lh is None:
        raise InputError("sweep needs 'lambda_w' and 'lambda_h'")
    lb = _number_list(cfg, "lambda_b", 0.0)
    if len(lb) != 1:
        raise InputError("sweep 'lambda_b' must be one number")
    bias = cfg.get("bias", True)
    if not isinstance(bias, bool):
        raise InputError("sweep 'bias' must be true or false")
    seeds = _as_list(cfg.get("seeds", [0]), "seeds")
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise InputError("sweep 'seeds' must be non-negative integers")
    tol = cfg.get("tol", 1e-10)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise InputError(f"sweep 'tol' must be > 0, got {tol!r}")
    chunk = cfg.get("chunk_size", 256)
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise InputError(f"sweep 'chunk_size' must be an integer >= 1, got {chunk!r}")
    dists = [d for spec in cfg["distributions"] for d in _expand_distribution(spec, base)]
    for loss in losses:
        if loss == "pal_normalized":
            for desc, d in dists:
                if np.any(np.asarray(d.label_sets).sum(1) == 0):
                    raise InputError(f"pal_normalized is undefined for the empty label set ({desc})")
    problems = []
    groups: dict[tuple, list[int]] = {}
    for loss, a, b_, seed, (di, (desc, d)) in itertools.product(losses, lw, lh, seeds, enumerate(dists)):
        key = (loss, a, b_, d.num_classes)
        groups.setdefault(key, []).append(len(problems))
        problems.append({"distribution": di, "description": desc, "loss": loss, "lambda_w": a,
                         "lambda_h": b_, "seed": seed, "num_classes": d.num_classes,
                         "num_sets": d.num_sets})
    chunks = [idx[i:i + chunk] for idx in groups.values() for i in range(0, len(idx), chunk)]
    settings = {"dim": dim, "lambda_b": lb[0], "bias": bias, "tol": float(tol), "chunk_size": chunk}
    canon = json.dumps({"settings": settings, "problems": problems,
                        "distributions": [d.to_dict() for _, d in dists]}, sort_keys=True)
    return {"settings": settings, "problems": problems, "chunks": chunks,
            "distributions": [{"description": desc, **d.to_dict()} for desc, d in dists],
            "sweep_hash": hashlib.sha256(canon.encode()).hexdigest()}


def _chunk_paths(out: Path, i: int):
    return out / f"chunk-{i:05d}.npz", out / f"chunk-{i:05d}.json"


def _chunk_done(out: Path, i: int, sweep_hash: str) -> bool:
    npz, js = _chunk_paths(out, i)
    if not (npz.exists() and js.exists()):
        return False
    try:
        meta = json.loads(js.read_text())
        digest = hashlib.sha256(npz.read_bytes()).hexdigest()
    except (OSError, ValueError):
        return False
    return meta.get("sha256") == digest and meta.get("sweep_hash") == sweep_hash


def _solve_chunk(dists, config, seeds, tol):
    """One batched solve of a chunk."""
    from .solve import solve_batch

    r = solve_batch(dists, config, seeds=list(seeds), tol=tol, progress=False, warn=False)
    return {k: np.asarray(getattr(r, k)) for k in
            ("W", "H", "b", "objective", "grad_norm", "residual", "certificate", "converged",
             "certified", "status", "steps", "mask")}


def run_sweep(config, out_dir, *, progress: bool = True) -> dict:
    """Run (or resume) a sweep into `out_dir`. Returns a summary dict."""
    import jax

    from .ufm import UFMConfig

    jax.config.update("jax_enable_x64", True)  # a command-line run: results files are float64
    manifest = expand_sweep(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "manifest.json"
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text()).get("sweep_hash")
        except ValueError:
            old = None
        if old is not None and old != manifest["sweep_hash"]:
            raise InputError(f"{out} holds the results of a different sweep; choose another --out")
    write_json_atomic(mpath, manifest)
    settings, problems, chunks = manifest["settings"], manifest["problems"], manifest["chunks"]
    dists = [LabelDistribution.from_dict(d) for d in manifest["distributions"]]
    todo = [i for i in range(len(chunks)) if not _chunk_done(out, i, manifest["sweep_hash"])]
    skipped = len(chunks) - len(todo)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(chunks), initial=skipped, desc="sweep chunks", unit="chunk")
    not_converged = []
    t_all = time.perf_counter()
    for i in todo:
        idx = chunks[i]
        p0 = problems[idx[0]]
        config = UFMConfig(p0["loss"], settings["dim"], p0["lambda_w"], p0["lambda_h"],
                           settings["lambda_b"], settings["bias"]).validate()
        t0 = time.perf_counter()
        arrays = _solve_chunk([dists[problems[j]["distribution"]] for j in idx], config,
                              [problems[j]["seed"] for j in idx], settings["tol"])
        arrays["problem"] = np.asarray(idx)
        wall = time.perf_counter() - t0
        bad = [int(j) for j, c in zip(idx, arrays["converged"]) if not c]
        not_converged += bad
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        npz, js = _chunk_paths(out, i)
        tmp = npz.with_name(f".{npz.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, npz)
        meta = run_metadata(command="sweep", chunk=i, problems=[int(j) for j in idx],
                            config=config._asdict(), seeds=[problems[j]["seed"] for j in idx],
                            tol=settings["tol"], wall_time_s=wall, not_converged=bad,
                            sweep_hash=manifest["sweep_hash"],
                            sha256=hashlib.sha256(data).hexdigest())
        write_json_atomic(js, meta)  # last: marks the chunk complete
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"not converged: {len(not_converged)}")
    if bar is not None:
        bar.close()
    return {"chunks": len(chunks), "computed": len(todo), "skipped": skipped,
            "problems": len(problems), "not_converged": not_converged,
            "wall_time_s": time.perf_counter() - t_all}


def load_sweep(out_dir) -> dict[str, Any]:
    """Gather every finished chunk: arrays concatenated along the problem axis (in manifest
    order; H padded to the largest T), plus the manifest. Missing chunks are reported."""
    out = Path(out_dir)
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except FileNotFoundError:
        raise InputError(f"no sweep manifest in {out}") from None
    parts, missing = [], []
    for i in range(len(manifest["chunks"])):
        if _chunk_done(out, i, manifest["sweep_hash"]):
            with np.load(_chunk_paths(out, i)[0]) as f:
                parts.append({k: f[k] for k in f.files})
        else:
            missing.append(i)
    res: dict[str, Any] = {"manifest": manifest, "missing_chunks": missing}
    if parts:
        T = max(p["H"].shape[1] for p in parts)
        for p in parts:
            pad = T - p["H"].shape[1]
            p["H"] = np.pad(p["H"], ((0, 0), (0, pad), (0, 0)))
            p["mask"] = np.pad(p["mask"], ((0, 0), (0, pad)))
        for k in parts[0]:
            if k in ("W", "b") and len({p[k].shape[1:] for p in parts}) > 1:
                res[k] = [x for p in parts for x in p[k]]  # different K: keep a list
            else:
                res[k] = np.concatenate([p[k] for p in parts])
    return res


def add_sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run or resume a sweep over distributions x losses x lambdas x seeds")
    p.add_argument("--config", required=True, metavar="SWEEP.json")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=sweep_command)


def sweep_command(args) -> int:
    s = run_sweep(args.config, args.out, progress=not args.no_progress)
    print(f"{s['problems']} problems in {s['chunks']} chunks: {s['computed']} computed, "
          f"{s['skipped']} already done, {s['wall_time_s']:.1f} s -> {args.out}")
    if s["not_converged"]:
        print(f"not converged: problems {s['not_converged']}")
        return 1
    return 0
