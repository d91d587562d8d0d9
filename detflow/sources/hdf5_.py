"""``hdf5``: a 3-D or 4-D dataset in an HDF5 file, read chunk by chunk.

The dataset is named by ``ds_path``, or found: the one dataset in the file (links,
external ones included, are followed, as in a DECTRIS master file) with 3 or 4
dimensions and a numeric dtype; with several, the error lists them. Chunked and
compressed datasets are read in whole chunk bands, partitions follow the chunking and
each chunk is decompressed once (:mod:`detflow.sources.chunked`). Importing
``hdf5plugin`` registers the bitshuffle/LZ4 and other filters DECTRIS files use.

The reader pickles as ``(path, ds_path, shapes)``; each process keeps its own open
file handles.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError, MissingDependencyError, SourceFormatError, SourceNotFoundError
from detflow.sources.base import FrameReader, Source
from detflow.sources.chunked import ChunkedReader, block_frames

__all__ = ["HDF5Reader", "HDF5Source", "find_datasets"]

_FILES: dict[tuple[str, int], Any] = {}
_FILES_LOCK = threading.Lock()


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - a regular dependency
        raise MissingDependencyError("h5py", "hdf5", "the hdf5 source") from err
    with contextlib.suppress(ImportError):  # only compressed files need it
        import hdf5plugin  # noqa: F401 - registers the compression filters
    return h5py


def _open_file(path: str) -> Any:
    try:
        mtime = os.stat(path).st_mtime_ns
    except FileNotFoundError as err:
        raise SourceNotFoundError(path) from err
    key = (path, mtime)
    with _FILES_LOCK:
        f = _FILES.get(key)
        if f is None or not f.id.valid:
            f = _h5py().File(path, "r")
            _FILES[key] = f
        return f


def find_datasets(group: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    """``(path, dataset)`` of every 3-D/4-D numeric dataset under ``group``, links followed."""
    h5py = _h5py()
    if depth > 16:
        return
    for name in group:
        try:
            obj = group[name]
        except (KeyError, OSError):  # a dangling link
            continue
        path = f"{prefix}/{name}"
        if isinstance(obj, h5py.Dataset):
            if obj.ndim in (3, 4) and obj.dtype.kind in "biuf":
                yield path, obj
        elif isinstance(obj, h5py.Group):
            yield from find_datasets(obj, path, depth + 1)


@dataclass(frozen=True)
class HDF5Reader(ChunkedReader):
    path: str = ""
    ds_path: str = ""
    mtime: int = 0

    def key(self) -> tuple[Any, ...]:
        return ("hdf5", self.path, self.ds_path, self.mtime)

    def _read_slab(self, sel: tuple[slice, ...]) -> np.ndarray:
        ds = _open_file(self.path)[self.ds_path]
        try:
            return np.asarray(ds[sel])
        except OSError as err:
            raise SourceFormatError(
                f"{self.path}: dataset {self.ds_path!r}: reading {sel} failed: {err} (a compression "
                "filter that is not installed, or a damaged file)"
            ) from err


class HDF5Source(Source):
    """A dataset in an HDF5 file.

    Parameters
    ----------
    path
        The file.
    ds_path
        The dataset inside it (``"/entry/data/data"``); found when there is one
        obvious 3-D or 4-D dataset.
    sig_dims
        Trailing axes that are the signal (default 2).

    Examples
    --------
    >>> import numpy as np, h5py, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "scan.h5")
    >>> with h5py.File(p, "w") as f:
    ...     _ = f.create_dataset("/entry/data", data=np.zeros((4, 5, 8, 8), "u2"), chunks=(1, 5, 8, 8))
    >>> src = HDF5Source(p)
    >>> src.shape, src.ds_path, src.partition_boundaries()[:3]
    (Shape(nav=(4, 5), sig=(8, 8)), '/entry/data', [0, 5, 10])
    """

    name: ClassVar[str] = "hdf5"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        ds_path: str | None = None,
        sig_dims: int = 2,
        nav_shape: Sequence[int] | None = None,
        sig_shape: Sequence[int] | None = None,
        sync_offset: int = 0,
        allow_short: bool = False,
    ) -> None:
        if path is None:
            raise ConfigurationError("hdf5 source: parameter 'path' is required")
        self.path = os.fspath(path)
        self.ds_path = ds_path
        self._sig_dims = int(sig_dims)
        super().__init__(nav_shape=nav_shape, sig_shape=sig_shape, sync_offset=sync_offset,
                         allow_short=allow_short)

    def describe(self) -> str:
        return f"hdf5 source {self.path!r}"

    def _open(self) -> tuple[tuple[int, ...], tuple[int, ...], FrameReader]:
        if not os.path.isfile(self.path):
            raise SourceNotFoundError(self.path)
        h5py = _h5py()
        try:
            f = _open_file(self.path)
        except OSError as err:
            raise SourceFormatError(f"{self.path}: not a readable HDF5 file ({err})") from err
        if self.ds_path is None:
            found = list(find_datasets(f))
            if len(found) != 1:
                listed = ", ".join(f"{p} {d.shape} {d.dtype}" for p, d in found) or "none"
                raise ConfigurationError(
                    f"{self.path}: give parameter 'ds_path': expected exactly one 3-D or 4-D "
                    f"numeric dataset, found: {listed}"
                )
            self.ds_path = found[0][0]
        try:
            ds = f[self.ds_path]
        except (KeyError, OSError) as err:
            raise ConfigurationError(
                f"{self.path}: parameter 'ds_path': no dataset {self.ds_path!r} in the file"
            ) from err
        if not isinstance(ds, h5py.Dataset):
            raise ConfigurationError(f"{self.path}: parameter 'ds_path': {self.ds_path!r} is a group")
        if not 1 <= self._sig_dims < ds.ndim:
            raise ConfigurationError(
                f"hdf5 source {self.path!r}: parameter 'sig_dims' must be between 1 and {ds.ndim - 1} "
                f"for a dataset of shape {ds.shape}; got {self._sig_dims}"
            )
        if ds.dtype.kind not in "biuf":
            raise SourceFormatError(f"{self.path}: dataset {self.ds_path!r} has dtype {ds.dtype}, not numeric")
        nav, sig = tuple(ds.shape[: -self._sig_dims]), tuple(ds.shape[-self._sig_dims :])
        self.chunks = ds.chunks
        self.compression = ds.compression
        reader = HDF5Reader(nav, sig, np.dtype(ds.dtype), block_frames(nav, ds.chunks),
                            path=self.path, ds_path=self.ds_path, mtime=os.stat(self.path).st_mtime_ns)
        return nav, sig, reader

    def partition_boundaries(self) -> list[int] | None:
        reader = self._reader
        assert isinstance(reader, HDF5Reader)
        if reader.block <= 1:
            return None
        return list(range(0, reader.n_frames, reader.block))
