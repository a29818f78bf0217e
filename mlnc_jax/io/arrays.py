"""A trained network's arrays on disk: features, labels, classifier and bias, read lazily.

Formats: `.npy`, `.npz` (one named member; an npz member is read whole) and `.safetensors`
(the format of `safetensors.torch.save_file` and Hugging Face: an 8-byte header length, a
JSON header, raw little-endian data; `bfloat16` is widened to float32 exactly). `.npy` and
`.safetensors` rows are read by plain reads at their offsets: no torch, no memory map.
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
    """Row blocks by plain reads at their offsets (a memory map would count every page
    touched as resident memory of the process: the whole file, for a streamed pass)."""
    with open(path, "rb") as f:
        fmt = np.lib.format
        version = fmt.read_magic(f)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject:
        raise InputError(f"{path} holds Python objects, not numbers")
    if fortran or len(shape) == 0:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
        return array_source(a, str(path))
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def reader(i, j):
        with open(path, "rb") as f:
            f.seek(offset + i * row)
            out = np.fromfile(f, dtype=dtype, count=(j - i) * row // max(dtype.itemsize, 1))
        if out.size * dtype.itemsize != (j - i) * row:
            raise InputError(f"{path} is truncated: rows {i}..{j} are not all there")
        return out.reshape((j - i,) + tuple(shape[1:]))
    return ArraySource(str(path), tuple(shape), dtype, reader)


def _npz(path: Path, key, role) -> ArraySource:
    with np.load(path, allow_pickle=False) as z:
        k = _choose_key(list(z.files), key, role, str(path))
        a = z[k]
    return array_source(a, f"{path}:{k}")


_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
              "I32": "<i4", "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2",
              "U8": "u1", "BOOL": "?"}


def _safetensors_header(path: Path) -> tuple[dict, int]:
    """The format's JSON header (`{name: {dtype, shape, data_offsets}}`) and where the data
    starts: an 8-byte little-endian length, then the header."""
    import json

    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 2 <= n <= min(path.stat().st_size - 8, 100 << 20):
            raise InputError(f"{path} is not a safetensors file (header length {n})")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def _safetensors(path: Path, key, role) -> ArraySource:
    """Row blocks by plain reads (no memory map; `bfloat16` widened to float32 exactly)."""
    header, start = _safetensors_header(path)
    k = _choose_key(list(header), key, role, str(path))
    info = header[k]
    if info.get("dtype") not in _ST_DTYPES:
        raise InputError(f"{path}:{k} has dtype {info.get('dtype')!r}, not a number type")
    shape, bf16 = tuple(int(x) for x in info["shape"]), info["dtype"] == "BF16"
    dtype = np.dtype(_ST_DTYPES[info["dtype"]])
    begin, end = (int(x) for x in info["data_offsets"])
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    if end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise InputError(f"{path}:{k}: data size does not match shape {list(shape)}")

    def reader(i, j):
        i, j = (0, 1) if not shape else (i, j)
        with open(path, "rb") as f:
            f.seek(start + begin + i * row)
            out = np.fromfile(f, dtype=dtype, count=(j - i) * row // dtype.itemsize)
        if out.size * dtype.itemsize != (j - i) * row:
            raise InputError(f"{path}:{k} is truncated")
        out = (out.astype(np.uint32) << 16).view(np.float32) if bf16 else out
        return out.reshape(shape[1:] if not shape else (j - i,) + shape[1:]) if shape else out[0]
    return ArraySource(f"{path}:{k}", shape, np.dtype(np.float32) if bf16 else dtype, reader)


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
