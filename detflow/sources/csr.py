"""``csr``: sparse frames (event-camera data) kept as CSR until a block is read.

A sparse dataset is one CSR matrix of ``n_frames`` rows and ``frame_size`` columns
(``indptr``, ``indices``, ``values``), the layout of ``scipy.sparse.save_npz`` and of
the ASI Timepix3 stream. Its readers (:class:`CsrReader`, and the live one in
:class:`CsrPayloadReader`) keep the frames sparse:

* ``read_pixels`` (what :meth:`Partition.read` and ``read_frames`` use, and so every UDF
  today) densifies only the frames asked for, once per block, with a compiled scatter;
* ``read_csr`` (what :meth:`Partition.read_sparse` uses) returns the block as a
  ``scipy.sparse.csr_array`` of shape ``(frames, frame_size)`` without densifying.

Files: ``save_csr(path, matrix, nav_shape=, sig_shape=)`` writes a ``.npz`` that
``scipy.sparse.load_npz`` reads too, plus ``nav_shape``/``sig_shape`` entries; a
plain ``save_npz`` file loads as well (``nav_shape``/``sig_shape`` then come from the
caller, or a flat scan and a square frame).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numba
import numpy as np

from detflow.errors import ConfigurationError, SourceFormatError, SourceNotFoundError
from detflow.sources.base import FrameReader, Source

__all__ = ["CsrPayloadReader", "CsrReader", "CsrSource", "densify", "load_csr", "save_csr"]


@numba.njit(cache=True, nogil=True)
def _scatter(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, out: np.ndarray) -> None:
    for r in range(len(indptr) - 1):
        for j in range(indptr[r], indptr[r + 1]):
            out[r, indices[j]] += values[j]


def densify(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, frame_size: int,
            dtype: Any = None) -> np.ndarray:
    """Rows of a CSR matrix as a dense ``(rows, frame_size)`` array (duplicates add up)."""
    out = np.zeros((len(indptr) - 1, frame_size), dtype=values.dtype if dtype is None else dtype)
    if len(indices):
        _scatter(indptr, indices, values, out)
    return out


class _CsrFrames:
    """Shared reading logic: subclasses give :meth:`arrays` for their frames."""

    frame_size: int
    base_frame: int
    total_frames: int
    n_local: int

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def n_pixels(self) -> int:
        return self.total_frames * self.frame_size

    def _rows(self, f0: int, f1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        """CSR rows for stream frames ``f0:f1`` clipped to this reader's, and the clipping."""
        lo = min(max(f0 - self.base_frame, 0), self.n_local)
        hi = min(max(f1 - self.base_frame, lo), self.n_local)
        indptr, indices, values = self.arrays()
        return indptr[lo:hi + 1], indices, values, lo + self.base_frame - f0, f1 - (hi + self.base_frame)

    def read_csr(self, f0: int, f1: int) -> Any:
        """Stream frames ``f0:f1`` as a ``scipy.sparse.csr_array`` (rows outside the data are empty)."""
        import scipy.sparse

        ip, indices, values, before, after = self._rows(f0, f1)
        a, b = int(ip[0]), int(ip[-1])
        rel = ip - a
        if before or after:
            rel = np.concatenate([np.zeros(before, rel.dtype), rel, np.full(after, rel[-1], rel.dtype)])
        vals = values[a:b]
        if not vals.dtype.isnative:
            vals = vals.astype(vals.dtype.newbyteorder("="))
        return scipy.sparse.csr_array((vals, indices[a:b], rel), shape=(f1 - f0, self.frame_size))

    def read_pixels(self, start: int, stop: int) -> np.ndarray:
        fs = self.frame_size
        f0, f1 = start // fs, -(-stop // fs)
        ip, indices, values, before, after = self._rows(f0, f1)
        dtype: np.dtype = self.dtype  # type: ignore[attr-defined]
        dense = np.zeros((f1 - f0, fs), dtype=dtype.newbyteorder("="))  # compiled code takes native order
        if len(ip) > 1 and ip[-1] > ip[0]:
            if not values.dtype.isnative:
                a, b = int(ip[0]), int(ip[-1])
                ip, values, indices = ip - a, values[a:b].astype(dense.dtype), indices[a:b]
            _scatter(ip, indices, values, dense[before:f1 - f0 - after])
        flat = dense.reshape(-1)[start - f0 * fs: stop - f0 * fs]
        return flat if dtype.isnative else flat.astype(dtype)


@dataclass(frozen=True)
class CsrReader(_CsrFrames):
    """Frames ``base_frame:base_frame + len(indptr) - 1`` of a CSR matrix held in memory."""

    indptr: np.ndarray = field(repr=False)
    indices: np.ndarray = field(repr=False)
    values: np.ndarray = field(repr=False)
    frame_size: int = 1
    base_frame: int = 0
    total: int | None = None

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def n_local(self) -> int:  # type: ignore[override]
        return len(self.indptr) - 1

    @property
    def total_frames(self) -> int:  # type: ignore[override]
        return self.n_local + self.base_frame if self.total is None else self.total

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.indptr, self.indices, self.values

    def restrict(self, start: int, stop: int) -> CsrReader:
        fs = self.frame_size
        lo = min(max(start // fs - self.base_frame, 0), self.n_local)
        hi = min(max(-(-stop // fs) - self.base_frame, lo), self.n_local)
        a, b = int(self.indptr[lo]), int(self.indptr[hi])
        return CsrReader(self.indptr[lo:hi + 1] - a, self.indices[a:b], self.values[a:b], frame_size=fs,
                         base_frame=self.base_frame + lo, total=self.total_frames)


@dataclass(frozen=True)
class CsrPayloadReader(_CsrFrames):
    """Live frames as received: ``values`` then ``indices`` (int32) back to back in one
    flat ``uint8`` payload (in memory, or a shared segment the worker maps by name)."""

    payload: FrameReader = field(repr=False)
    indptr: np.ndarray = field(repr=False)
    value_dtype: np.dtype = np.dtype(np.uint32)
    frame_size: int = 1
    base_frame: int = 0
    total: int = 0

    @property
    def dtype(self) -> np.dtype:
        return self.value_dtype

    @property
    def n_local(self) -> int:  # type: ignore[override]
        return len(self.indptr) - 1

    @property
    def total_frames(self) -> int:  # type: ignore[override]
        return self.total

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nnz = int(self.indptr[-1])
        vbytes = nnz * self.value_dtype.itemsize
        ioff = payload_indices_offset(nnz, self.value_dtype)
        raw = self.payload.read_pixels(0, ioff + 4 * nnz)
        return self.indptr, raw[ioff:].view(np.int32), raw[:vbytes].view(self.value_dtype)

    def restrict(self, start: int, stop: int) -> CsrPayloadReader:
        return self


def payload_indices_offset(nnz: int, value_dtype: np.dtype) -> int:
    """Where the indices start in a live payload: after the values, 8-byte aligned."""
    return -(-(nnz * np.dtype(value_dtype).itemsize) // 8) * 8


def save_csr(path: str | os.PathLike[str], matrix: Any, *, nav_shape: Sequence[int] | None = None,
             sig_shape: Sequence[int] | None = None) -> None:
    """Write a CSR matrix of frames (rows) as ``.npz``, readable by ``scipy.sparse.load_npz``.

    ``matrix`` is a ``scipy.sparse`` matrix or array of shape ``(n_frames, frame_size)``,
    or a dense array of frames (converted).
    """
    import scipy.sparse

    dtype = None
    if not scipy.sparse.issparse(matrix):
        dense = np.asarray(matrix)
        dtype = dense.dtype  # kept as it is, byte order included (scipy holds native order only)
        nav_shape = nav_shape if nav_shape is not None else dense.shape[:-2]
        sig_shape = sig_shape if sig_shape is not None else dense.shape[-2:]
        matrix = scipy.sparse.csr_array(
            dense.astype(dtype.newbyteorder("="), copy=False).reshape(math.prod(nav_shape), math.prod(sig_shape)))
    m = scipy.sparse.csr_array(matrix)
    extra: dict[str, Any] = {}
    if nav_shape is not None:
        extra["nav_shape"] = np.asarray(nav_shape, dtype=np.int64)
    if sig_shape is not None:
        extra["sig_shape"] = np.asarray(sig_shape, dtype=np.int64)
    np.savez(path, indices=m.indices, indptr=m.indptr, format=np.array(b"csr"), shape=np.asarray(m.shape),
             data=m.data if dtype is None else m.data.astype(dtype), **extra)


@dataclass(frozen=True)
class CsrFile:
    """A loaded CSR file: the matrix arrays and the shapes it declares (or ``None``)."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n_frames: int
    frame_size: int
    nav_shape: tuple[int, ...] | None
    sig_shape: tuple[int, ...] | None


def load_csr(path: str | os.PathLike[str]) -> CsrFile:
    """Read a CSR ``.npz`` (``save_csr`` or ``scipy.sparse.save_npz``), checking its layout."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SourceNotFoundError(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = {"indptr", "indices", "data", "shape"} - keys
            if missing:
                raise SourceFormatError(f"{path}: a CSR .npz needs the arrays indptr, indices, data and shape; "
                                        f"{', '.join(sorted(missing))} missing (found {', '.join(sorted(keys))})")
            fmt = z["format"].item() if "format" in keys else b"csr"
            if (fmt.decode() if isinstance(fmt, bytes) else str(fmt)) != "csr":
                raise SourceFormatError(f"{path}: expected a CSR matrix; got format {fmt!r}; convert it with "
                                        "scipy.sparse.csr_array(m) and save it again")
            indptr = z["indptr"].astype(np.int64)
            indices = z["indices"]
            values = z["data"]
            shape = tuple(int(s) for s in z["shape"])
            nav = tuple(int(s) for s in z["nav_shape"]) if "nav_shape" in keys else None
            sig = tuple(int(s) for s in z["sig_shape"]) if "sig_shape" in keys else None
    except (OSError, ValueError) as err:
        if isinstance(err, SourceFormatError):
            raise
        raise SourceFormatError(f"{path}: not a readable .npz file ({err})") from err
    if len(shape) != 2 or len(indptr) != shape[0] + 1 or indptr[0] != 0 or indptr[-1] != len(indices) \
            or len(indices) != len(values) or np.any(np.diff(indptr) < 0):
        raise SourceFormatError(f"{path}: inconsistent CSR arrays (shape {shape}, {len(indptr)} indptr entries, "
                                f"{len(indices)} indices, {len(values)} values)")
    if len(indices) and (indices.min() < 0 or indices.max() >= shape[1]):
        raise SourceFormatError(f"{path}: column indices must lie in 0:{shape[1]}")
    if values.dtype.kind not in "biuf":
        raise SourceFormatError(f"{path}: values must be numeric; got {values.dtype}")
    return CsrFile(indptr, indices.astype(np.int32, copy=False), values, shape[0], shape[1], nav, sig)


class CsrSource(Source):
    """A sparse dataset from a CSR ``.npz`` (``ctx.load("csr", path=...)``).

    Partitions carry their rows of the matrix (small: events, not pixels);
    :meth:`Partition.read` gives dense blocks, :meth:`Partition.read_sparse` CSR ones.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> import detflow as df
    >>> from detflow.sources.csr import save_csr
    >>> frames = np.zeros((2, 3, 4, 4), np.uint16); frames[1, 2, 3, 0] = 7
    >>> path = os.path.join(tempfile.mkdtemp(), "scan.npz"); save_csr(path, frames)
    >>> ds = df.Context.make_with("inline").load("csr", path=path)
    >>> ds.shape, int(next(iter(ds.partitions())).read_sparse().sum())
    (Shape(nav=(2, 3), sig=(4, 4)), 7)
    """

    name: ClassVar[str] = "csr"

    def __init__(self, path: str | os.PathLike[str], *, nav_shape: Sequence[int] | None = None,
                 sig_shape: Sequence[int] | None = None, sync_offset: int = 0, allow_short: bool = False) -> None:
        self.path = os.fspath(path)
        self._file = load_csr(self.path)
        f = self._file
        native_sig = f.sig_shape if f.sig_shape is not None else tuple(sig_shape) if sig_shape is not None \
            else _square(f.frame_size, self.path)
        if math.prod(native_sig) != f.frame_size:
            raise ConfigurationError(f"{self.path}: sig_shape {tuple(native_sig)} holds {math.prod(native_sig)} "
                                     f"pixels, but the matrix rows have {f.frame_size}")
        self._native = (f.nav_shape if f.nav_shape is not None and math.prod(f.nav_shape) == f.n_frames
                        else (f.n_frames,), tuple(native_sig))
        super().__init__(nav_shape=nav_shape, sig_shape=sig_shape, sync_offset=sync_offset, allow_short=allow_short)

    def _open(self) -> tuple[tuple[int, ...], tuple[int, ...], FrameReader]:
        f = self._file
        return self._native[0], self._native[1], CsrReader(f.indptr, f.indices, f.values, frame_size=f.frame_size)

    def describe(self) -> str:
        return f"csr source {self.path}"


def _square(size: int, path: str) -> tuple[int, int]:
    side = math.isqrt(size)
    if side * side != size:
        raise ConfigurationError(f"{path}: frames of {size} pixels are not square and the file has no sig_shape; "
                                 "pass sig_shape=")
    return (side, side)
