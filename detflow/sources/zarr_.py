"""``zarr``: a 3-D or 4-D zarr array (v2 or v3), read chunk by chunk.

``path`` is the array's store, or a group holding exactly one 3-D/4-D numeric array
(else give ``array_path``). Partitions follow the chunking and each chunk is decoded
once (:mod:`detflow.sources.chunked`); the reader pickles as ``(path, array_path)``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError, SourceFormatError, SourceNotFoundError
from detflow.nodes.params import Param
from detflow.sources.base import FrameReader, Source
from detflow.sources.chunked import ChunkedReader, block_frames
from detflow.sources.params import COMMON_PARAMS, SIG_DIMS, path_param

__all__ = ["ZarrReader", "ZarrSource"]

_ARRAYS: dict[tuple[str, str], Any] = {}
_ARRAYS_LOCK = threading.Lock()


def _open_array(path: str, array_path: str) -> Any:
    import zarr

    key = (path, array_path)
    with _ARRAYS_LOCK:
        arr = _ARRAYS.get(key)
    if arr is None:
        arr = zarr.open_array(os.path.join(path, array_path) if array_path else path, mode="r")
        with _ARRAYS_LOCK:
            _ARRAYS[key] = arr
    return arr


@dataclass(frozen=True)
class ZarrReader(ChunkedReader):
    path: str = ""
    array_path: str = ""
    mtime: int = 0

    def key(self) -> tuple[Any, ...]:
        return ("zarr", self.path, self.array_path, self.mtime)

    def _read_slab(self, sel: tuple[slice, ...]) -> np.ndarray:
        arr = _open_array(self.path, self.array_path)
        try:
            return np.asarray(arr[sel])
        except Exception as err:  # a codec error deep inside zarr names no file
            where = os.path.join(self.path, self.array_path) if self.array_path else self.path
            span = ", ".join(f"{s.start or 0}:{'' if s.stop is None else s.stop}" for s in sel)
            bad = _failing_chunk(arr, sel)
            what = "a chunk there is" if bad is None else f"chunk {bad[0]!r} (scan positions [{bad[1]}]) is"
            raise SourceFormatError(
                f"{where}: cannot read [{span}]: {what} corrupt or unreadable ({type(err).__name__}: {err})"
            ) from err


#: chunks tried one by one to find the one a failed read tripped on
_MAX_CHUNKS_TRIED = 4096


def _failing_chunk(arr: Any, sel: tuple[slice, ...]) -> tuple[str, str] | None:
    """``(chunk key, its nav range)`` of the first chunk under ``sel`` that cannot be read, or ``None``.

    Runs only after a read failed: reads the chunks the selection touches one at a time.
    """
    import itertools

    chunks, shape = tuple(arr.chunks), tuple(arr.shape)
    ranges = []
    for axis, (c, n) in enumerate(zip(chunks, shape, strict=True)):
        s = sel[axis] if axis < len(sel) else slice(None)
        lo, hi, _ = s.indices(n)
        ranges.append(range(lo // c, -(-hi // c)) if hi > lo else range(0))
    for tried, coords in enumerate(itertools.product(*ranges)):
        if tried >= _MAX_CHUNKS_TRIED:
            return None
        try:
            arr.blocks[coords]
        except Exception:
            key = arr.metadata.encode_chunk_key(coords)
            nav = ", ".join(f"{i * c}:{min((i + 1) * c, n)}" for i, c, n in zip(coords, chunks, shape[: len(sel)],
                                                                              strict=False))
            return key, nav
    return None


def _mtime(path: str) -> int:
    meta = [os.path.join(path, n) for n in ("zarr.json", ".zarray", ".zgroup")]
    return max((os.stat(p).st_mtime_ns for p in meta if os.path.exists(p)), default=0)


class ZarrSource(Source):
    """A zarr array.

    Parameters
    ----------
    path
        The array (a ``.zarr`` directory), or a group holding one obvious array.
    array_path
        The array inside the group at ``path``.
    sig_dims
        Trailing axes that are the signal (default 2).

    Examples
    --------
    >>> import numpy as np, zarr, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "scan.zarr")
    >>> z = zarr.create_array(p, shape=(4, 5, 8, 8), chunks=(2, 5, 8, 8), dtype="u2")
    >>> z[:] = 1  # chunks of nothing but the fill value are not stored, and would read as missing
    >>> ZarrSource(p).partition_boundaries()
    [0, 10]
    """

    name: ClassVar[str] = "zarr"
    suffixes: ClassVar[tuple[str, ...]] = (".zarr",)

    @classmethod
    def can_open(cls, path: str) -> bool:
        """A directory holding ``zarr.json``, ``.zarray`` or ``.zgroup``."""
        return os.path.isdir(path) and any(
            os.path.exists(os.path.join(path, n)) for n in ("zarr.json", ".zarray", ".zgroup"))

    params_spec: ClassVar[tuple[Param, ...]] = (
        path_param(),
        Param("array_path", str, default="", doc="the array inside the store (found if there is only one)"),
        SIG_DIMS,
        *COMMON_PARAMS,
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        array_path: str = "",
        sig_dims: int = 2,
        nav_shape: Sequence[int] | None = None,
        sig_shape: Sequence[int] | None = None,
        sync_offset: int = 0,
        allow_short: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.array_path = array_path.strip("/")
        self._sig_dims = int(sig_dims)
        self._allow_short = bool(allow_short)  # _open needs it before the base class sets it
        super().__init__(nav_shape=nav_shape, sig_shape=sig_shape, sync_offset=sync_offset,
                         allow_short=allow_short)

    def describe(self) -> str:
        return f"zarr source {self.path!r}"

    def _open(self) -> tuple[tuple[int, ...], tuple[int, ...], FrameReader]:
        import zarr

        if not os.path.exists(self.path):
            raise SourceNotFoundError(self.path)
        target = os.path.join(self.path, self.array_path) if self.array_path else self.path
        try:
            node = zarr.open(target, mode="r")
        except Exception as err:  # zarr raises several types for "not a zarr store"
            raise SourceFormatError(f"{target}: not a zarr array or group ({err})") from err
        if isinstance(node, zarr.Group):
            found = sorted(((name, a) for name, a in node.members(max_depth=None)
                            if isinstance(a, zarr.Array) and a.ndim in (3, 4)
                            and np.dtype(a.dtype).kind in "biuf"), key=lambda t: t[0])
            if len(found) != 1:
                listed = ", ".join(f"{n} {a.shape} {a.dtype}" for n, a in found) or "none"
                raise ConfigurationError(
                    f"{target}: give parameter 'array_path': expected exactly one 3-D or 4-D numeric "
                    f"array in the group, found: {listed}"
                )
            self.array_path = "/".join(p for p in (self.array_path, found[0][0]) if p)
            node = found[0][1]
        arr = node
        if not 1 <= self._sig_dims < arr.ndim:
            raise ConfigurationError(
                f"zarr source {self.path!r}: parameter 'sig_dims' must be between 1 and {arr.ndim - 1} "
                f"for an array of shape {arr.shape}; got {self._sig_dims}"
            )
        dtype = np.dtype(arr.dtype)
        if dtype.kind not in "biuf":
            raise SourceFormatError(f"{target}: dtype {dtype} is not numeric")
        nav, sig = tuple(arr.shape[: -self._sig_dims]), tuple(arr.shape[-self._sig_dims :])
        self.chunks = tuple(arr.chunks)
        if not self._allow_short and (written := arr.nchunks_initialized) < arr.nchunks:
            raise SourceFormatError(
                f"{target}: {arr.nchunks - written} of the array's {arr.nchunks} chunks are missing (an "
                "interrupted write, or chunks of nothing but the fill value that the writer left out); "
                f"pass allow_short=True to read them as the fill value {arr.fill_value!r}"
            )
        reader = ZarrReader(nav, sig, dtype, block_frames(nav, self.chunks), path=self.path,
                            array_path=self.array_path, mtime=_mtime(target))
        return nav, sig, reader

    def partition_boundaries(self) -> list[int] | None:
        reader = self._reader
        assert isinstance(reader, ZarrReader)
        if reader.block <= 1:
            return None
        return list(range(0, reader.n_frames, reader.block))
