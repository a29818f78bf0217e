"""Resumable parameter sweeps: `mlnc-jax sweep --config SWEEP.json --out DIR`.

A sweep is the grid distributions × losses × λ_W × λ_H × seeds. It is cut into chunks of at
most `chunk_size` problems that share the loss, `K` and the λ's, and each chunk is solved in
one batched program (`mlnc_jax.solve_batch`). Each finished chunk is written to
`DIR/chunk-NNNNN.npz` plus `DIR/chunk-NNNNN.json` (the sidecar, written last, so it marks
completion). The sidecar records the chunk index, the problem indices it holds, a digest of
the chunk's configuration and a SHA-256 over the npz bytes and the sidecar's own content.
On a rerun, chunks whose files check out against the manifest are skipped; a missing,
partial, edited, swapped or foreign chunk is recomputed and the rerun says how many and
why. An interrupt (even kill -9) loses at most the running chunk, and the recomputed chunk
is bitwise equal to an uninterrupted run's. `DIR/manifest.json` lists every problem of the
grid; it is written only after the whole config has been validated. `DIR/.sweep.lock`
keeps a second concurrent run out; stray temporary files of killed runs are removed.

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
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import schema
from .errors import InputError
from .labels import LabelDistribution, balanced, random_correlated, singleton_imbalance
from .losses import LOSSES, get_loss
from .results_io import jsonable, run_metadata, write_json_atomic

__all__ = ["expand_sweep", "run_sweep", "load_sweep", "add_sweep_parser", "sweep_command"]

GENERATORS = {"random_correlated": random_correlated, "singleton_imbalance": singleton_imbalance,
              "balanced": balanced}
KEYS = {"distributions", "losses", "dim", "lambda_w", "lambda_h", "lambda_b", "bias", "seeds",
        "tol", "chunk_size"}
# Python-level loops build generated distributions and the grid: bound them so that a typo
# (a range to 10**12) is refused at once instead of running out of memory.
MAX_GENERATED_SETS = 2_000_000
MAX_PROBLEMS = 1_000_000
LOCK_NAME = ".sweep.lock"


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
    from .real_labels import load_labels

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


def _canon(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
    return h.hexdigest()


def expand_sweep(config) -> dict:
    """Validate a sweep config and expand its grid. Returns the manifest (a dict) with
    `problems` (one entry per problem), `chunks` (lists of problem indices), a digest of
    each chunk's configuration (`chunk_digests`) and the distributions. Writes nothing."""
    from .ufm import UFMConfig

    cfg, base = _load_config(config)
    unknown = set(cfg) - KEYS
    if unknown:
        raise InputError(f"unknown sweep key(s): {', '.join(sorted(map(str, unknown)))}")
    if "distributions" not in cfg or not isinstance(cfg["distributions"], list) or not cfg["distributions"]:
        raise InputError("sweep needs a non-empty list 'distributions'")
    losses = _as_list(cfg.get("losses", ["pal"]), "losses")
    if not losses:
        raise InputError("sweep losses is empty")
    for loss in losses:
        if not isinstance(loss, str) or loss not in LOSSES:
            raise InputError(f"unknown loss {loss!r} in sweep; choose from {', '.join(LOSSES)}")
    if "dim" not in cfg:
        raise InputError("sweep needs 'dim' (an integer >= 1)")
    dim = schema.check_int(cfg["dim"], "sweep 'dim'", low=1)
    if "lambda_w" not in cfg or "lambda_h" not in cfg:
        raise InputError("sweep needs 'lambda_w' and 'lambda_h'")
    lw = _number_list(cfg, "lambda_w", positive=True)
    lh = _number_list(cfg, "lambda_h", positive=True)
    lb = _number_list(cfg, "lambda_b", 0.0)
    if len(lb) != 1:
        raise InputError("sweep 'lambda_b' must be one number")
    for a, b_ in itertools.product(lw, lh):
        schema.check_lambdas(a, b_, lb[0])
    bias = cfg.get("bias", True)
    if not isinstance(bias, bool):
        raise InputError("sweep 'bias' must be true or false")
    seeds = [schema.check_seed(s, "sweep 'seeds'") for s in _as_list(cfg.get("seeds", [0]), "seeds")]
    if not seeds:
        raise InputError("sweep 'seeds' is empty")
    tol = schema.check_tol(cfg.get("tol", 1e-10), "sweep 'tol'")
    chunk = schema.check_int(cfg.get("chunk_size", 256), "sweep 'chunk_size'", low=1)
    dists = [d for i, spec in enumerate(cfg["distributions"])
             for d in _expand_distribution(spec, base, f"sweep distribution #{i}")]
    n_problems = len(losses) * len(lw) * len(lh) * len(seeds) * len(dists)
    if n_problems > MAX_PROBLEMS:
        raise InputError(f"the sweep has {n_problems} problems, more than {MAX_PROBLEMS}")
    for loss, a, b_ in itertools.product(losses, lw, lh):
        UFMConfig(loss, dim, a, b_, lb[0], bias).validate()
    for loss in losses:  # where the loss is undefined, or no minimiser exists (THEORY §2b)
        rule = get_loss(loss)
        for desc, d in dists:
            Y, w = np.asarray(d.label_sets), np.asarray(d.weights)
            msg = rule.domain_error(Y, w) or (rule.minimiser_error(Y, w)
                                              if bias and lb[0] == 0 else None)
            if msg:
                raise InputError(f"{msg} ({loss}, {desc})")
    problems = []
    groups: dict[tuple, list[int]] = {}
    for loss, a, b_, seed, (di, (desc, d)) in itertools.product(losses, lw, lh, seeds, enumerate(dists)):
        key = (loss, a, b_, d.num_classes)
        groups.setdefault(key, []).append(len(problems))
        problems.append({"distribution": di, "description": desc, "loss": loss, "lambda_w": a,
                         "lambda_h": b_, "seed": seed, "num_classes": d.num_classes,
                         "num_sets": d.num_sets})
    chunks = [idx[i:i + chunk] for idx in groups.values() for i in range(0, len(idx), chunk)]
    for idx in chunks:
        K = problems[idx[0]]["num_classes"]
        T = max(problems[j]["num_sets"] for j in idx)
        schema.check_memory(schema.estimate_solve_bytes(K, T, dim, batch=len(idx)),
                            f"a sweep chunk of {len(idx)} problems with K = {K}, dim = {dim}")
    settings = {"dim": dim, "lambda_b": lb[0], "bias": bias, "tol": float(tol), "chunk_size": chunk}
    dist_dicts = [d.to_dict() for _, d in dists]
    canon = _canon({"settings": settings, "problems": problems, "distributions": dist_dicts})
    # what a chunk's numbers depend on: settings, its problems and their distributions
    digests = [_sha(_canon({"settings": settings, "problems": [problems[j] for j in idx],
                            "distributions": [dist_dicts[problems[j]["distribution"]] for j in idx]}))
               for idx in chunks]
    return {"settings": settings, "problems": problems, "chunks": chunks, "chunk_digests": digests,
            "distributions": [{"description": desc, **dd} for (desc, _), dd in zip(dists, dist_dicts)],
            "sweep_hash": _sha(canon)}


def _chunk_paths(out: Path, i: int):
    return out / f"chunk-{i:05d}.npz", out / f"chunk-{i:05d}.json"


def _sidecar_checksum(meta: dict, npz_bytes: bytes) -> str:
    """SHA-256 over the npz bytes and the sidecar's own content (all but this field)."""
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return _sha(npz_bytes, b"\0", _canon(body))


def chunk_problem(out: Path, i: int, manifest: dict) -> str | None:
    """Why chunk `i` in `out` cannot be used for `manifest` (None: it is good).

    "missing" means never written; anything else is a chunk to recompute: interrupted,
    unreadable, edited (checksum), from another sweep, or another chunk's files."""
    npz, js = _chunk_paths(out, i)
    if not js.exists():
        return "interrupted (no sidecar)" if npz.exists() else "missing"
    if not npz.exists():
        return "npz missing"
    try:
        meta = json.loads(js.read_text())
        data = npz.read_bytes()
    except (OSError, ValueError, RecursionError):
        return "unreadable sidecar"
    if not isinstance(meta, dict):
        return "sidecar is not a JSON object"
    try:
        if meta.get("sha256") != _sha(data) or meta.get("checksum") != _sidecar_checksum(meta, data):
            return "checksum mismatch"
    except (TypeError, ValueError, RecursionError):
        return "checksum mismatch"
    if meta.get("sweep_hash") != manifest["sweep_hash"]:
        return "from another sweep"
    if meta.get("chunk") != i:
        return f"holds chunk {meta.get('chunk')!r}"
    if meta.get("problems") != manifest["chunks"][i]:
        return "holds other problems"
    if meta.get("config_digest") != manifest["chunk_digests"][i]:
        return "configuration differs"
    return None


def _chunk_done(out: Path, i: int, manifest: dict) -> bool:
    return chunk_problem(out, i, manifest) is None


class _Lock:
    """Exclusive lock on `DIR/.sweep.lock` (flock: released by the kernel when the holder
    dies, so the lock of a killed sweep is taken over). The file holds the holder's PID."""

    def __init__(self, out: Path):
        self.path = out / LOCK_NAME
        self.fd = None

    def __enter__(self):
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InputError(f"cannot create the lock file {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise InputError(f"another sweep (PID {holder}) is running in {self.path.parent}; "
                             "wait for it or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock; the file stays (unlinking races)
            self.fd = None
        return False


def _remove_stray_temps(out: Path) -> int:
    """Temporary files of killed runs: `.chunk-*.tmp*` and `.tmp-*` (atomic JSON writes).
    Only called while holding the lock, so no live writer owns them."""
    n = 0
    for p in list(out.glob(".chunk-*.tmp*")) + list(out.glob(".tmp-*")):
        try:
            p.unlink()
            n += 1
        except OSError:
            pass
    return n


def _read_manifest(path: Path):
    """The manifest in an output directory (None if absent); refuse anything else."""
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        m = None
    if not (isinstance(m, dict) and isinstance(m.get("sweep_hash"), str)
            and all(isinstance(m.get(k), list) for k in ("problems", "chunks", "chunk_digests"))
            and len(m["chunks"]) == len(m["chunk_digests"])):
        raise InputError(f"{path} is not a sweep manifest of this version; remove it or choose "
                         "another --out")
    return m


def _solve_chunk(dists, config, seeds, tol):
    """One batched solve of a chunk."""
    from .solve import solve_batch

    r = solve_batch(dists, config, seeds=list(seeds), tol=tol, progress=False, warn=False)
    return {k: np.asarray(getattr(r, k)) for k in
            ("W", "H", "b", "objective", "grad_norm", "residual", "certificate", "converged",
             "certified", "status", "steps", "mask")}


def _write_chunk(out: Path, i: int, arrays: dict, meta: dict) -> None:
    """npz (temporary name, fsync, rename), then the sidecar with the checksums (atomic).
    The sidecar is last: it marks the chunk complete."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    npz, js = _chunk_paths(out, i)
    tmp = npz.with_name(f".{npz.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, npz)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {**meta, "sha256": _sha(data)}
    meta["checksum"] = _sidecar_checksum(json.loads(_canon(jsonable(meta))), data)
    write_json_atomic(js, meta)


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    parent = out.parent if not out.exists() else out
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write to {parent}")


def run_sweep(config, out_dir, *, progress: bool = True) -> dict:
    """Run (or resume) a sweep into `out_dir`. Returns a summary dict.

    The config is validated completely before anything is written. A lock file makes a
    second concurrent run on the same directory fail; stray temporary files of killed runs
    are removed; every chunk whose files disagree with the manifest is recomputed."""
    import jax

    from .ufm import UFMConfig

    jax.config.update("jax_enable_x64", True)  # a command-line run: results files are float64
    manifest = expand_sweep(config)
    out = Path(out_dir)
    _check_out_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {out}: {e.strerror or e}") from None
    with _Lock(out):
        return _run_locked(manifest, out, progress, UFMConfig)


def _run_locked(manifest, out: Path, progress: bool, UFMConfig) -> dict:
    mpath = out / "manifest.json"
    old = _read_manifest(mpath)
    if old is not None and old["sweep_hash"] != manifest["sweep_hash"]:
        raise InputError(f"{out} holds the results of a different sweep; choose another --out")
    removed = _remove_stray_temps(out)
    try:
        write_json_atomic(mpath, manifest)
    except OSError as e:
        raise InputError(f"cannot write {mpath}: {e.strerror or e}") from None
    settings, problems, chunks = manifest["settings"], manifest["problems"], manifest["chunks"]
    dists = [LabelDistribution.from_dict(d) for d in manifest["distributions"]]
    status = {i: chunk_problem(out, i, manifest) for i in range(len(chunks))}
    todo = [i for i, why in status.items() if why is not None]
    reasons: dict[str, int] = {}
    for i in todo:
        if status[i] != "missing":
            reasons[status[i]] = reasons.get(status[i], 0) + 1
    skipped = len(chunks) - len(todo)
    not_certified = []
    t_all = time.perf_counter()
    bar = None
    try:
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(chunks), initial=skipped, desc="sweep chunks", unit="chunk")
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
            bad = [int(j) for j, c in zip(idx, arrays["certified"]) if not c]
            not_certified += bad
            meta = run_metadata(command="sweep", chunk=i, problems=[int(j) for j in idx],
                                config=config.as_dict(), seeds=[problems[j]["seed"] for j in idx],
                                tol=settings["tol"], wall_time_s=wall, not_certified=bad,
                                sweep_hash=manifest["sweep_hash"],
                                config_digest=manifest["chunk_digests"][i])
            try:
                _write_chunk(out, i, arrays, meta)
            except OSError as e:
                raise InputError(f"cannot write chunk {i} to {out}: {e.strerror or e} "
                                 f"({i - todo[0]} chunk(s) of this run are saved; rerun to resume)") from None
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"not certified: {len(not_certified)}")
    finally:
        if bar is not None:
            bar.close()
    return {"chunks": len(chunks), "computed": len(todo), "skipped": skipped,
            "recomputed": sum(reasons.values()), "recomputed_reasons": reasons,
            "stray_files_removed": removed, "problems": len(problems),
            "not_certified": sorted(not_certified), "wall_time_s": time.perf_counter() - t_all}


def load_sweep(out_dir) -> dict[str, Any]:
    """Gather every finished chunk: arrays concatenated along the problem axis in manifest
    order (problem 0, 1, 2, ...; H padded to the largest T), plus the manifest. Chunks that
    are missing or do not check out are listed in `missing_chunks`."""
    out = Path(out_dir)
    manifest = _read_manifest(out / "manifest.json")
    if manifest is None:
        raise InputError(f"no sweep manifest in {out}")
    parts, missing = [], []
    for i in range(len(manifest["chunks"])):
        if _chunk_done(out, i, manifest):
            with np.load(_chunk_paths(out, i)[0], allow_pickle=False) as f:
                part = {k: f[k] for k in f.files}
            if part.get("problem") is None or part["problem"].tolist() != manifest["chunks"][i]:
                missing.append(i)
                continue
            parts.append(part)
        else:
            missing.append(i)
    res: dict[str, Any] = {"manifest": manifest, "missing_chunks": missing}
    if parts:
        T = max(p["H"].shape[1] for p in parts)
        for p in parts:
            pad = T - p["H"].shape[1]
            p["H"] = np.pad(p["H"], ((0, 0), (0, pad), (0, 0)))
            p["mask"] = np.pad(p["mask"], ((0, 0), (0, pad)))
        order = np.argsort(np.concatenate([p["problem"] for p in parts]), kind="stable")
        for k in parts[0]:
            if k in ("W", "b") and len({p[k].shape[1:] for p in parts}) > 1:
                rows = [x for p in parts for x in p[k]]  # different K: keep a list
                res[k] = [rows[j] for j in order]
            else:
                res[k] = np.concatenate([p[k] for p in parts])[order]
    return res


def add_sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run or resume a sweep over distributions x losses x lambdas x seeds")
    p.add_argument("--config", required=True, metavar="SWEEP.json")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=sweep_command)


def format_repairs(s: dict) -> str | None:
    """`recomputed 3 chunk(s): 2 checksum mismatch, 1 holds chunk 10` (None if none)."""
    parts = []
    if s.get("recomputed"):
        why = ", ".join(f"{n} {r}" for r, n in sorted(s["recomputed_reasons"].items()))
        parts.append(f"recomputed {s['recomputed']} chunk(s): {why}")
    if s.get("stray_files_removed"):
        parts.append(f"removed {s['stray_files_removed']} stray temporary file(s)")
    return "; ".join(parts) or None


def sweep_command(args) -> int:
    s = run_sweep(args.config, args.out, progress=not args.no_progress)
    repairs = format_repairs(s)
    if repairs:
        print(repairs)
    print(f"{s['problems']} problems in {s['chunks']} chunks: {s['computed']} computed, "
          f"{s['skipped']} already done, {s['wall_time_s']:.1f} s -> {args.out}")
    if s["not_certified"]:
        print(f"not certified: problems {s['not_certified']} (see their 'status' in load_sweep)")
        return 1
    return 0
