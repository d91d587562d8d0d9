"""``dask``: a dask array of shape ``nav + sig``, partitions aligned to its chunks.

Each partition computes its own slice of the array on the worker that reads it, with
dask's synchronous scheduler (the executor already runs partitions in parallel; a
thread pool inside each would only compete with it). Partitions follow the chunks
along the first nav axis (:mod:`detflow.sources.chunked`).

Each partition's reader holds only its own rows of the array, with the task graph
culled to the chunks those rows need (``dask.optimize``): a partition pickles with
the tasks of its own chunks, not the whole array's. For arrays read from files
(``da.from_zarr``) that is a few kilobytes; an array made with
``da.from_array(ndarray)`` still carries pixels, but only the partition's own, so a
process executor sends each pixel once per run instead of the whole array with every
partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError
from detflow.nodes.params import Param
from detflow.sources.base import FrameReader, Source
from detflow.sources.chunked import ChunkedReader, block_frames
from detflow.sources.params import COMMON_PARAMS, SIG_DIMS

__all__ = ["DaskReader", "DaskSource"]


@dataclass(frozen=True)
class DaskReader(ChunkedReader):
    """Frames of a dask array; ``array`` holds rows ``row0:`` of the first nav axis.

    ``name`` is the whole array's dask name (the key of cached blocks), which a
    restricted reader keeps while its ``array`` is a culled slice of rows.
    """

    array: Any = field(default=None, repr=False)
    row0: int = 0
    name: str = ""

    def key(self) -> tuple[Any, ...]:
        return ("dask", self.name or self.array.name)

    def _read_slab(self, sel: tuple[slice, ...]) -> np.ndarray:
        first = sel[0]
        rows = slice(first.start - self.row0, first.stop - self.row0)
        if rows.start < 0 or rows.stop > self.array.shape[0]:
            raise IndexError(
                f"dask source: rows {first.start}:{first.stop} lie outside this partition's rows "
                f"{self.row0}:{self.row0 + self.array.shape[0]}"
            )
        return np.asarray(self.array[(rows, *sel[1:])].compute(scheduler="synchronous"))

    def restrict(self, start: int, stop: int) -> DaskReader:
        """A reader of the whole blocks that hold pixels ``start:stop``, its graph culled."""
        import dask

        if stop <= start or self.row0 or not self.nav_shape:
            return self
        inner = self.n_frames // self.nav_shape[0]
        rows_per_block = max(1, self.block // max(1, inner))
        f0, f1 = start // self.frame_size, -(-stop // self.frame_size)
        y0 = f0 // max(1, self.block) * rows_per_block
        y1 = min(self.nav_shape[0], -(-f1 // max(1, self.block)) * rows_per_block)
        if y0 == 0 and y1 == self.nav_shape[0]:
            return self
        (sub,) = dask.optimize(self.array[y0:y1])
        return replace(self, array=sub, row0=y0, name=self.key()[1])


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
    params_spec: ClassVar[tuple[Param, ...]] = (
        Param("arr", object, doc="a dask array of shape nav_shape + sig_shape"), SIG_DIMS,
        *COMMON_PARAMS,
    )

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
