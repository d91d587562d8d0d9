"""Reading chunked N-D arrays (HDF5, zarr, dask) frame range by frame range.

A chunked array of shape ``nav_shape + sig_shape`` is read in *blocks*: runs of
whole frames that hold whole chunks. With chunks of ``c0`` along the first nav axis,
a block is ``c0 * prod(nav_shape[1:])`` frames (one band of chunk rows across the
whole scan), so a block reads every chunk it touches completely and no chunk belongs
to two blocks. Sources report the block starts through
:meth:`~detflow.sources.base.Source.partition_boundaries`, so partitions are whole
blocks and no chunk is decoded by two partitions.

Inside a partition the runner reads tiles smaller than a block. The reader keeps the
blocks it decoded last in a small per-process cache (:data:`_BLOCKS`, bounded in
bytes), so the tiles of one block decode it once; a read that covers whole blocks
goes straight to the array without passing through the cache.

Subclasses say how to open the array (by path, on the worker) and how to read a
hyperslab; the reader pickles as that recipe (path, dataset name, shapes), no data.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ChunkedReader", "block_frames", "nav_hyperslabs"]

_BLOCKS: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
_BLOCKS_LOCK = threading.Lock()
#: bytes of decoded blocks kept per process
BLOCK_CACHE_BYTES = 512 * 2**20


def block_frames(nav_shape: tuple[int, ...], chunks: tuple[int, ...] | None) -> int:
    """Frames per block for an array chunked as ``chunks`` (``None``: contiguous, 1)."""
    if not chunks:
        return 1
    return int(chunks[0]) * math.prod(nav_shape[1:])


def nav_hyperslabs(f0: int, f1: int, nav_shape: tuple[int, ...]) -> Iterator[tuple[int, tuple[slice, ...]]]:
    """Cover flat frames ``f0:f1`` with rectangular nav selections, in order.

    Yields ``(n_frames, selection)``: at most ``2 * len(nav_shape) - 1`` of them.
    """
    if f1 <= f0:
        return
    if len(nav_shape) == 1:
        yield f1 - f0, (slice(f0, f1),)
        return
    inner = math.prod(nav_shape[1:])
    y0, r0 = divmod(f0, inner)
    y1, r1 = divmod(f1, inner)
    if y0 == y1:  # inside one row of the first axis
        for n, sel in nav_hyperslabs(r0, r1, nav_shape[1:]):
            yield n, (slice(y0, y0 + 1), *sel)
        return
    if r0:
        for n, sel in nav_hyperslabs(r0, inner, nav_shape[1:]):
            yield n, (slice(y0, y0 + 1), *sel)
        y0 += 1
    if y1 > y0:
        yield (y1 - y0) * inner, (slice(y0, y1), *(slice(None),) * (len(nav_shape) - 1))
    if r1:
        for n, sel in nav_hyperslabs(0, r1, nav_shape[1:]):
            yield n, (slice(y1, y1 + 1), *sel)


@dataclass(frozen=True)
class ChunkedReader:
    """Frames of a chunked array as a flat pixel stream (see the module docstring).

    Subclasses implement :meth:`_read_slab` and :meth:`key`.
    """

    nav_shape: tuple[int, ...]
    sig_shape: tuple[int, ...]
    dtype: np.dtype
    block: int

    # --- what subclasses provide -----------------------------------------------------
    def _read_slab(self, sel: tuple[slice, ...]) -> np.ndarray:
        """``array[sel]`` (a nav selection; all of sig)."""
        raise NotImplementedError

    def key(self) -> tuple[Any, ...]:
        """Identifies the array across processes (path, dataset, modification time)."""
        raise NotImplementedError

    # --- FrameReader ----------------------------------------------------------------
    @property
    def frame_size(self) -> int:
        return math.prod(self.sig_shape)

    @property
    def n_frames(self) -> int:
        return math.prod(self.nav_shape)

    @property
    def n_pixels(self) -> int:
        return self.n_frames * self.frame_size

    def read_pixels(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.empty(0, dtype=self.dtype)
        fsize = self.frame_size
        f0, f1 = start // fsize, -(-stop // fsize)
        flat = self.read_frames(f0, f1).reshape(-1)
        return flat[start - f0 * fsize : stop - f0 * fsize]

    def restrict(self, start: int, stop: int) -> ChunkedReader:
        return self

    def read_frames(self, f0: int, f1: int) -> np.ndarray:
        """Frames ``f0:f1``, shaped ``(n, *sig_shape)``."""
        out = np.empty((f1 - f0, *self.sig_shape), dtype=self.dtype)
        b = self.block
        pos = f0
        while pos < f1:
            b0 = pos - pos % b
            b1 = min(b0 + b, self.n_frames)
            if b == 1 or (pos == b0 and f1 >= b1):  # whole blocks: straight from the array
                end = f1 if b == 1 or f1 == self.n_frames else b0 + (f1 - b0) // b * b
                self._read_direct(pos, end, out[pos - f0 : end - f0])
                pos = end
            else:
                hi = min(b1, f1)
                blk = self._cached_block(b0 // b, b0, b1)
                out[pos - f0 : hi - f0] = blk[pos - b0 : hi - b0]
                pos = hi
        return out

    def _read_direct(self, f0: int, f1: int, out: np.ndarray) -> None:
        pos = 0
        for n, sel in nav_hyperslabs(f0, f1, self.nav_shape):
            out[pos : pos + n] = self._read_slab(sel).reshape((n, *self.sig_shape))
            pos += n

    def _cached_block(self, index: int, b0: int, b1: int) -> np.ndarray:
        key = (*self.key(), index)
        with _BLOCKS_LOCK:
            blk = _BLOCKS.get(key)
            if blk is not None:
                _BLOCKS.move_to_end(key)
                return blk
        blk = np.empty((b1 - b0, *self.sig_shape), dtype=self.dtype)
        self._read_direct(b0, b1, blk)
        with _BLOCKS_LOCK:
            _BLOCKS[key] = blk
            total = sum(a.nbytes for a in _BLOCKS.values())
            while total > BLOCK_CACHE_BYTES and len(_BLOCKS) > 1:
                _, old = _BLOCKS.popitem(last=False)
                total -= old.nbytes
        return blk


def clear_block_cache() -> None:
    """Forget every cached block of this process (tests use it)."""
    with _BLOCKS_LOCK:
        _BLOCKS.clear()
