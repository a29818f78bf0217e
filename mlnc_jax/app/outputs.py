"""Where the command line writes: output paths checked before any compute (suffix, folder,
writable, never an input file, links resolved), results written atomically with a fallback
to a temporary folder so that finished compute is never lost."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..model.errors import InputError

__all__ = ["check_out", "check_figure", "refuse_input_overwrite", "probe_writable", "Saved",
           "write_results"]


def check_out(path: str, inputs=(), suffix: str = ".npz", flag: str = "--out",
              sidecar: bool = True) -> Path:
    """Refuse, before computing, an output that cannot be written or that would replace an
    input: the npz and its JSON sidecar are both checked, through links (`inputs`: pairs of
    flag and path; names that are not files, such as shipped table names, cannot collide).
    `sidecar=False`: a file that carries its own metadata (a JSON report), no sidecar."""
    from ..io.results import sidecar_path

    out = Path(path)
    if out.suffix != suffix:
        raise InputError(f"{flag} must end in {suffix}: {path}")
    if not out.parent.exists():
        raise InputError(f"output directory does not exist: {out.parent}")
    for target in (out, sidecar_path(out)) if sidecar else (out,):
        if target.is_dir():
            raise InputError(f"{flag} {path} would write {target}, which is a directory")
        refuse_input_overwrite(flag, target, inputs)
    probe_writable(out.parent)
    return out


def refuse_input_overwrite(flag: str, target: Path, inputs) -> None:
    """`InputError` if writing `target` would replace any input file (links resolved)."""
    for in_flag, name in inputs:
        src = Path(name) if name is not None else None
        if src is None or not src.exists():
            continue
        if os.path.realpath(src) == os.path.realpath(target):
            raise InputError(f"{flag} would overwrite the input {in_flag} {name} "
                             f"(writes {target}); choose another {flag}")


def probe_writable(directory: Path) -> None:
    """Create and remove a temporary file: the only test that also holds for root and for
    read-only mounts (permission bits alone say nothing there). Done before computing."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".mlnc-probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise InputError(f"cannot write to {directory}: {e.strerror or e}") from None


class Saved:
    """Where a result went: `path`, or a fallback in a temporary directory after `error`."""

    def __init__(self, path, intended, error=None):
        self.path, self.intended, self.error = path, intended, error

    def raise_if_fallback(self) -> None:
        if self.error is None:
            return
        where = f"results saved to {self.path}" if self.path else "results not saved (printed above)"
        raise InputError(f"cannot write {self.intended}: {self.error}; {where}")


def write_results(out: Path, arrays, meta) -> Saved:
    """Write atomically to `out`; if that fails after the compute (disk full, directory
    gone or made read-only), write to a new temporary directory instead."""
    from ..io.results import write_npz_atomic

    try:
        write_npz_atomic(out, arrays, meta)
        return Saved(out, out)
    except OSError as e:
        err = e.strerror or str(e)
    try:
        fallback = Path(tempfile.mkdtemp(prefix="mlnc-jax-")) / out.name
        write_npz_atomic(fallback, arrays, meta)
        return Saved(fallback, out, err)
    except OSError:
        return Saved(None, out, err)


def check_figure(path: str, inputs=(), flag: str = "--figure") -> Path:
    """A figure path (`.png`, `.pdf`, `.svg`) in a writable folder, not an input file."""
    fig = Path(path)
    if fig.suffix not in (".png", ".pdf", ".svg"):
        raise InputError(f"{flag} must end in .png, .pdf or .svg: {path}")
    if not fig.parent.exists():
        raise InputError(f"figure directory does not exist: {fig.parent}")
    if fig.is_dir():
        raise InputError(f"{flag} is a directory: {path}")
    refuse_input_overwrite(flag, fig, inputs)
    probe_writable(fig.parent)
    return fig
