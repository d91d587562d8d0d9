"""``dask``: a dask array of shape ``nav + sig``, partitions aligned to its chunks.

Each partition computes its own slice of the array on the worker that reads it, with
dask's synchronous scheduler (the executor already runs partitions in parallel; a
thread pool inside each would only compete with it). Partitions follow the chunks
along the first nav axis (:mod:`detflow.sources.chunked`). A partition pickles with
the array's task graph: small for arrays read from files (``da.from_zarr``), but an
array made with ``da.from_array(ndarray)`` carries its data with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError
from detflow.sources.base import FrameReader, Source
from detflow.sources.chunked import ChunkedReader, block_frames

__all__ = ["DaskReader", "DaskSource"]


@dataclass(frozen=True)
class DaskReader(ChunkedReader):
    array: Any = field(default=None, repr=False)

    def key(self) -> tuple[Any, ...]:
        return ("dask", self.array.name)

    def _read_slab(self, sel: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.array[sel].compute(scheduler="synchronous"))


class DaskSource(Source):
    """A dataset from a dask array.

    Parameters
    ----------
    arr
        A ``dask.array.Array`` of shape ``nav_shape + sig_shape``.
    sig_dims
        Trailing axes that are the signal (default 2).

    Examples
    --------
    >>> import dask.array as da
    >>> src = DaskSource(da.zeros((4, 6, 8, 8), chunks=(2, 6, 8, 8), dtype="u2"))
    >>> src.shape, src.partition_boundaries()
    (Shape(nav=(4, 6), sig=(8, 8)), [0, 12])
    """

    name: ClassVar[str] = "dask"

    def __init__(
        self,
        arr: Any = None,
        *,
        sig_dims: int = 2,
        nav_shape: Sequence[int] | None = None,
        sig_shape: Sequence[int] | None = None,
        sync_offset: int = 0,
        allow_short: bool = False,
    ) -> None:
        import dask.array as da

        if arr is None:
            raise ConfigurationError("dask source: parameter 'arr' (a dask array) is required")
        if not isinstance(arr, da.Array):
            raise ConfigurationError(f"dask source: 'arr' must be a dask array; got {type(arr).__name__}")
        if not 1 <= sig_dims < arr.ndim:
            raise ConfigurationError(
                f"dask source: parameter 'sig_dims' must be between 1 and {arr.ndim - 1} for an array "
                f"of shape {arr.shape}; got {sig_dims}"
            )
        if np.dtype(arr.dtype).kind not in "biuf":
            raise ConfigurationError(f"dask source: the array must be numeric; got dtype {arr.dtype}")
        if any(np.isnan(s) for s in arr.shape):
            raise ConfigurationError("dask source: the array's shape must be known; call arr.compute_chunk_sizes()")
        first = arr.chunks[0]
        if len(set(first[:-1])) > 1 or (len(first) > 1 and first[-1] > first[0]):
            arr = arr.rechunk({0: max(first)})  # blocks must be uniform along the first axis
        self.array = arr
        self._sig_dims = sig_dims
        super().__init__(nav_shape=nav_shape, sig_shape=sig_shape, sync_offset=sync_offset,
                         allow_short=allow_short)

    def _open(self) -> tuple[tuple[int, ...], tuple[int, ...], FrameReader]:
        arr = self.array
        nav, sig = tuple(arr.shape[: -self._sig_dims]), tuple(arr.shape[-self._sig_dims :])
        chunks = tuple(c[0] for c in arr.chunks)
        return nav, sig, DaskReader(nav, sig, np.dtype(arr.dtype), block_frames(nav, chunks), array=arr)

    def partition_boundaries(self) -> list[int] | None:
        reader = self._reader
        assert isinstance(reader, DaskReader)
        if reader.block <= 1:
            return None
        return list(range(0, reader.n_frames, reader.block))
