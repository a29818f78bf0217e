"""A trained network's arrays on disk: features, labels, classifier and bias, read lazily.

Formats: `.npy` (memory-mapped), `.npz` (one named member; a compressed member is read
whole) and `.safetensors` (the format of `safetensors.torch.save_file` and Hugging Face;
read through `safetensors`' numpy API, row slices without loading the file, no torch).
A source is `PATH` or `PATH:KEY`; without a key an archive must hold the flag's default
key (`features`, `labels`, `W` or `classifier`, `b` or `bias`) or exactly one array.

`ArraySource.rows(start, stop)` returns float64 (or the integer/bool dtype for labels)
copies of a row range, so a 10⁶ × 4096 float16/float32 feature file is streamed, never
held in float64 at once. Every failure is one `InputError` line naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..model.errors import InputError

__all__ = ["ArraySource", "array_source", "open_array", "DEFAULT_KEYS", "FORMATS"]

FORMATS = (".npy", ".npz", ".safetensors")
DEFAULT_KEYS = {"features": ("features", "H"), "labels": ("labels", "Y"),
                "classifier": ("W", "classifier", "weight"), "bias": ("b", "bias")}


class ArraySource(NamedTuple):
    """One array in a file: `name` (for messages), `shape`, `dtype` and a row reader."""

    name: str
    shape: tuple
    dtype: np.dtype
    reader: object  # callable (start, stop) -> np.ndarray

    def rows(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows `[start, stop)` as a fresh numpy array (the file's dtype)."""
        stop = self.shape[0] if stop is None else stop
        return np.array(self.reader(start, stop))

    def read(self) -> np.ndarray:
        """The whole array."""
        return np.array(self.reader(0, self.shape[0] if self.shape else None))


def array_source(a, name: str = "array") -> ArraySource:
    """An in-memory (or memory-mapped) array as an `ArraySource`, rows read by slicing."""
    a = a if isinstance(a, np.ndarray) else np.asarray(a)
    return ArraySource(name, a.shape, a.dtype, lambda i, j: a[i:j] if a.ndim else a)


def _split(spec: str) -> tuple[Path, str | None]:
    """`PATH` or `PATH:KEY` (a path that exists as given is never split)."""
    if Path(spec).exists() or ":" not in spec:
        return Path(spec), None
    path, _, key = spec.rpartition(":")
    return Path(path), key or None


def _choose_key(keys: list[str], key: str | None, role: str, name: str) -> str:
    if key is not None:
        if key not in keys:
            raise InputError(f"{name} has no array {key!r} (found: {', '.join(keys) or 'none'})")
        return key
    for k in DEFAULT_KEYS.get(role, ()):
        if k in keys:
            return k
    if len(keys) == 1:
        return keys[0]
    wanted = " or ".join(repr(k) for k in DEFAULT_KEYS.get(role, ()))
    raise InputError(f"{name} holds {len(keys)} arrays ({', '.join(keys) or 'none'}) and none "
                     f"named {wanted}: name one as {name}:KEY")


def _npy(path: Path) -> ArraySource:
    a = np.load(path, mmap_mode="r", allow_pickle=False)
    if not isinstance(a, np.ndarray):
        raise InputError(f"{path} does not hold an array")
    return array_source(a, str(path))


def _npz(path: Path, key, role) -> ArraySource:
    with np.load(path, allow_pickle=False) as z:
        k = _choose_key(list(z.files), key, role, str(path))
        a = z[k]
    return array_source(a, f"{path}:{k}")


def _safetensors(path: Path, key, role) -> ArraySource:
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - a declared dependency
        raise InputError("reading .safetensors needs the 'safetensors' package") from None
    f = safe_open(str(path), framework="numpy")
    k = _choose_key(list(f.keys()), key, role, str(path))
    sl = f.get_slice(k)
    shape = tuple(sl.get_shape())
    # the dtype of a zero-row slice: safetensors names dtypes its own way ("F32", "BF16")
    dtype = np.asarray(sl[0:0] if shape else f.get_tensor(k)).dtype
    return ArraySource(f"{path}:{k}", shape, dtype,
                       lambda i, j: sl[i:j] if shape else f.get_tensor(k))


def open_array(spec: str, role: str) -> ArraySource:
    """The array named by `spec` (`PATH` or `PATH:KEY`) for `role` (a key of `DEFAULT_KEYS`)."""
    path, key = _split(str(spec))
    if path.suffix not in FORMATS:
        raise InputError(f"{path}: unsupported format {path.suffix or '(none)'} "
                         f"(use {', '.join(FORMATS)})")
    if key is not None and path.suffix == ".npy":
        raise InputError(f"{path} is a .npy file (one array): drop ':{key}'")
    try:
        if path.is_dir():
            raise InputError(f"{path} is a directory, not an array file")
        with open(path, "rb"):
            pass
        if path.suffix == ".npy":
            return _npy(path)
        return _npz(path, key, role) if path.suffix == ".npz" else _safetensors(path, key, role)
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except InputError:
        raise
    except Exception as e:  # damaged files: zip, header and safetensors errors alike
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot read {path} as {role}: {msg}") from None
