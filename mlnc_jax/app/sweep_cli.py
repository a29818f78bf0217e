"""The `mlnc-jax sweep` command: a plain run, a `--worker I/N` share (or a SLURM job-array
task's), or one process of a `jax.distributed` job (`--distributed`; `sweep_shares`)."""

from __future__ import annotations

import math

from ..model.errors import InputError
from .sweep import run_sweep
from .sweep_shares import initialize_distributed, parse_share, share_from_environment

__all__ = ["add_sweep_parser", "sweep_command", "format_repairs"]


def add_sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run or resume a sweep over distributions x losses x lambdas x seeds")
    p.add_argument("--config", required=True, metavar="SWEEP.json")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--worker", default=None, metavar="I/N",
                   help="compute chunk share I of N beside other workers (default: the SLURM "
                        "job-array task's share when SLURM_ARRAY_TASK_ID is set)")
    p.add_argument("--distributed", action="store_true",
                   help="one process of a jax.distributed job: its share of the chunks on its "
                        "own devices; process 0 writes the manifest and reports the folder")
    p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="with --distributed: the coordinator (omit to detect the cluster)")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="with --distributed: how long to wait for the coordinator and peers")
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


def _share(args):
    if args.distributed:
        if args.worker is not None:
            raise InputError("--worker and --distributed exclude each other")
        if not args.timeout > 0:
            raise InputError(f"--timeout must be positive, got {args.timeout}")
        initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                               int(math.ceil(args.timeout)))
        return None
    if args.coordinator or args.num_processes is not None or args.process_id is not None:
        raise InputError("--coordinator, --num-processes and --process-id need --distributed")
    return parse_share(args.worker) if args.worker is not None else share_from_environment()


def sweep_command(args) -> int:
    share = _share(args)
    s = run_sweep(args.config, args.out, progress=not args.no_progress, worker=share,
                  distributed=args.distributed, timeout_s=args.timeout)
    repairs = format_repairs(s)
    if repairs:
        print(repairs)
    who = f" (worker {s['worker']})" if "worker" in s else ""
    print(f"{s['problems']} problems in {s['chunks']} chunks{who}: {s['computed']} computed, "
          f"{s['skipped']} already done, {s['wall_time_s']:.1f} s -> {args.out}")
    if s.get("chunks_left"):
        print(f"{s['chunks_left']} chunk(s) of the sweep are not done yet (other workers' "
              "shares); a plain `mlnc-jax sweep` of the folder finishes them")
    bad = s["not_certified"] if s.get("folder_not_certified") is None else s["folder_not_certified"]
    if bad:
        print(f"not certified: problems {bad} (see their 'status' in load_sweep)")
        return 1
    return 0
