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
zero padding after), `b`, `objective`, `grad_norm`, `residual`, `certificate`,
`converged`, `certified`, `status` (THEORY §2c), `steps`, `mask`, and `problem` (indices into the manifest). `load_sweep(DIR)` gathers them.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import interrupts
from ..io.results import jsonable, run_metadata, write_json_atomic
from ..model.errors import InputError
from ..model.labels import LabelDistribution
from . import sweep_shares
from .sweep_config import canonical_json, digest, expand_sweep, input_files

__all__ = ["expand_sweep", "run_sweep", "load_sweep"]

LOCK_NAME = ".sweep.lock"


def _chunk_paths(out: Path, i: int):
    return out / f"chunk-{i:05d}.npz", out / f"chunk-{i:05d}.json"


def _sidecar_checksum(meta: dict, npz_bytes: bytes) -> str:
    """SHA-256 over the npz bytes and the sidecar's own content (all but this field)."""
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return digest(npz_bytes, b"\0", canonical_json(body))


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
        if meta.get("sha256") != digest(data) or meta.get("checksum") != _sidecar_checksum(meta, data):
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
    import jax

    from ..engine.batch import solve_batch

    # this process's own devices: under jax.distributed a chunk is one process's work, with
    # no traffic to the others while it runs
    r = solve_batch(dists, config, seeds=list(seeds), tol=tol, progress=False, warn=False,
                    devices=jax.local_devices())
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
    meta = {**meta, "sha256": digest(data)}
    meta["checksum"] = _sidecar_checksum(json.loads(canonical_json(jsonable(meta))), data)
    write_json_atomic(js, meta)


def _written_here(name: str) -> bool:
    """Whether a sweep writes, replaces or removes a file of this name in its folder."""
    import fnmatch

    patterns = ("manifest.json", "chunk-[0-9][0-9][0-9][0-9][0-9].npz",
                "chunk-[0-9][0-9][0-9][0-9][0-9].json", LOCK_NAME, ".sweep.share-*.lock",
                ".chunk-*.tmp*", ".tmp-*")
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _refuse_input_overwrite(out: Path, config) -> None:
    """`--out` may not be an input, nor hold one under a name the sweep writes or removes
    (links resolved), checked before anything is computed or written."""
    real_out = os.path.realpath(out)
    for f in input_files(config):
        if not f.exists():
            continue
        real = os.path.realpath(f)
        if real == real_out or (os.path.dirname(real) == real_out
                                and _written_here(os.path.basename(real))):
            raise InputError(f"--out {out} would overwrite the input {f}; choose another --out")


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    parent = out.parent if not out.exists() else out
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write to {parent}")


def run_sweep(config, out_dir, *, progress: bool = True, worker=None,
              distributed: bool = False, timeout_s: float = 300.0) -> dict:
    """Run (or resume) a sweep into `out_dir`. Returns a summary dict.

    The config is validated completely before anything is written. A lock file makes a
    second concurrent run on the same directory fail; stray temporary files of killed runs
    are removed; every chunk whose files disagree with the manifest is recomputed.
    `worker` (`"I/N"` or a `Share`) computes one share of the chunks beside other workers;
    `distributed=True` takes the share of this `jax.distributed` process
    (`mlnc_jax.app.sweep_shares`)."""
    import jax

    from ..model.ufm import UFMConfig

    jax.config.update("jax_enable_x64", True)  # a command-line run: results files are float64
    share = sweep_shares.distributed_share() if distributed else (
        sweep_shares.parse_share(worker) if isinstance(worker, str) else worker)
    out = Path(out_dir)
    _refuse_input_overwrite(out, config)
    manifest = expand_sweep(config)
    _check_out_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {out}: {e.strerror or e}") from None
    if share is None:
        with _Lock(out):
            return _run_locked(manifest, out, progress, UFMConfig)
    with sweep_shares.SharedLock(out, share, LOCK_NAME):
        return _run_share(manifest, out, progress, UFMConfig, share,
                          timeout_s if distributed else None)


def _run_share(manifest, out: Path, progress: bool, UFMConfig, share, timeout_s) -> dict:
    """One worker's share (`timeout_s` set: a `jax.distributed` process, which meets the
    others after the manifest and at the end)."""
    if timeout_s is None or share.index == 0:
        _write_manifest(out, manifest)
    if timeout_s is not None:
        sweep_shares.barrier("sweep-manifest", timeout_s)
        _write_manifest(out, manifest, check_only=True)
    dists = [LabelDistribution.from_dict(d) for d in manifest["distributions"]]
    todo_all, reasons = _chunks_to_compute(out, manifest)
    todo = sweep_shares.in_share(todo_all, share, len(manifest["chunks"]))
    t_all = time.perf_counter()
    not_certified = _run_chunks(manifest, out, dists, todo, len(manifest["chunks"]) - len(todo),
                                progress, UFMConfig)
    if timeout_s is not None:
        sweep_shares.barrier("sweep-done", timeout_s)
    left, _ = _chunks_to_compute(out, manifest)
    return {"chunks": len(manifest["chunks"]), "computed": len(todo),
            "skipped": len(sweep_shares.in_share(range(len(manifest["chunks"])), share,
                                                 len(manifest["chunks"]))) - len(todo),
            "recomputed": sum(reasons.values()), "recomputed_reasons": reasons,
            "stray_files_removed": 0, "problems": len(manifest["problems"]),
            "not_certified": sorted(not_certified), "wall_time_s": time.perf_counter() - t_all,
            "worker": str(share), "chunks_left": len(left),
            "folder_not_certified": _folder_not_certified(out, manifest) if not left else None}


def _folder_not_certified(out: Path, manifest: dict) -> list[int]:
    """The problems not certified over every chunk of a complete folder (from the sidecars)."""
    bad = []
    for i in range(len(manifest["chunks"])):
        bad += json.loads(_chunk_paths(out, i)[1].read_text()).get("not_certified", [])
    return sorted(int(j) for j in bad)


def _run_locked(manifest, out: Path, progress: bool, UFMConfig) -> dict:
    removed = _take_over_dir(out, manifest)
    chunks = manifest["chunks"]
    dists = [LabelDistribution.from_dict(d) for d in manifest["distributions"]]
    todo, reasons = _chunks_to_compute(out, manifest)
    skipped = len(chunks) - len(todo)
    t_all = time.perf_counter()
    not_certified = _run_chunks(manifest, out, dists, todo, skipped, progress, UFMConfig)
    return {"chunks": len(chunks), "computed": len(todo), "skipped": skipped,
            "recomputed": sum(reasons.values()), "recomputed_reasons": reasons,
            "stray_files_removed": removed, "problems": len(manifest["problems"]),
            "not_certified": sorted(not_certified), "wall_time_s": time.perf_counter() - t_all}


def _take_over_dir(out: Path, manifest: dict) -> int:
    """Refuse a directory of another sweep, remove stray temporary files and write the
    manifest. Returns how many stray files were removed."""
    _write_manifest(out, manifest, check_only=True)
    removed = _remove_stray_temps(out)
    _write_manifest(out, manifest)
    return removed


def _write_manifest(out: Path, manifest: dict, check_only: bool = False) -> None:
    """Refuse a folder holding another sweep's manifest; else write ours (atomically: workers
    that write it at once write the same bytes)."""
    mpath = out / "manifest.json"
    old = _read_manifest(mpath)
    if old is not None and old["sweep_hash"] != manifest["sweep_hash"]:
        raise InputError(f"{out} holds the results of a different sweep; choose another --out")
    if check_only:
        return
    try:
        write_json_atomic(mpath, manifest)
    except OSError as e:
        raise InputError(f"cannot write {mpath}: {e.strerror or e}") from None


def _chunks_to_compute(out: Path, manifest: dict) -> tuple[list[int], dict[str, int]]:
    """The chunks to compute, and how many of them are recomputed for each reason (a chunk
    never written is not counted as recomputed)."""
    status = {i: chunk_problem(out, i, manifest) for i in range(len(manifest["chunks"]))}
    todo = [i for i, why in status.items() if why is not None]
    reasons: dict[str, int] = {}
    for i in todo:
        if status[i] != "missing":
            reasons[status[i]] = reasons.get(status[i], 0) + 1
    return todo, reasons


def _run_chunks(manifest, out: Path, dists, todo, skipped: int, progress: bool,
                UFMConfig) -> list[int]:
    """Solve and write the chunks `todo` in order. Returns the problems not certified."""
    not_certified = []
    bar = None
    try:
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(manifest["chunks"]), initial=skipped, desc="sweep chunks",
                       unit="chunk")
        for i in todo:
            interrupts.check()
            arrays, meta, bad = _compute_chunk(manifest, i, dists, UFMConfig)
            not_certified += bad
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
    return not_certified


def _compute_chunk(manifest, i: int, dists, UFMConfig) -> tuple[dict, dict, list[int]]:
    """Chunk `i`'s arrays, its sidecar metadata and its problems that are not certified."""
    settings, problems = manifest["settings"], manifest["problems"]
    idx = manifest["chunks"][i]
    p0 = problems[idx[0]]
    config = UFMConfig(p0["loss"], settings["dim"], p0["lambda_w"], p0["lambda_h"],
                       settings["lambda_b"], settings["bias"]).validate()
    t0 = time.perf_counter()
    arrays = _solve_chunk([dists[problems[j]["distribution"]] for j in idx], config,
                          [problems[j]["seed"] for j in idx], settings["tol"])
    arrays["problem"] = np.asarray(idx)
    wall = time.perf_counter() - t0
    bad = [int(j) for j, c in zip(idx, arrays["certified"]) if not c]
    meta = run_metadata(command="sweep", chunk=i, problems=[int(j) for j in idx],
                        config=config.as_dict(), seeds=[problems[j]["seed"] for j in idx],
                        tol=settings["tol"], wall_time_s=wall, not_certified=bad,
                        sweep_hash=manifest["sweep_hash"],
                        config_digest=manifest["chunk_digests"][i])
    return arrays, meta, bad


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
