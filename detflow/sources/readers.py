"""Frame readers shared by the formats: memory-mapped files and arrays in memory.

Both present their data as a flat pixel stream (see :mod:`detflow.sources.base`).
``MmapReader`` pickles as (path, offset, dtype, size) and maps the file on the worker
that reads it. Each process keeps its few most recent mappings (keyed by the file's
identity, size and modification time, so a rewritten file is mapped afresh): mapping
anew for every tile would pay the page-table set-up again on every run, which costs
about a third of the throughput on data in the page cache. ``ArrayReader`` holds a flat view of an
array; ``restrict`` narrows it to one partition's pixels, so pickling a partition of an
in-memory dataset carries that partition's data and nothing more. ``RecordReader``
maps files that store one frame per fixed-size record with bytes around it
(blockfile, EMPAD).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from detflow.errors import SourceFormatError, SourceNotFoundError

__all__ = ["ArrayReader", "MmapReader", "RecordReader", "forget_mappings"]

_MAPS: OrderedDict[tuple[object, ...], np.memmap] = OrderedDict()
_MAPS_LOCK = threading.Lock()
_MAX_MAPS = 16


def forget_mappings(path: str) -> None:
    """Drop this process's cached mappings of ``path`` (the source was closed)."""
    with _MAPS_LOCK:
        for key in [k for k in _MAPS if k[0] == path]:
            del _MAPS[key]


@dataclass(frozen=True)
class MmapReader:
    """Pixels of a contiguous C-order block in a file, read through ``np.memmap``."""

    path: str
    offset: int
    dtype: np.dtype
    n_pixels: int

    def read_pixels(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.empty(0, dtype=self.dtype)
        return self._mapping()[start:stop]

    def _mapping(self) -> np.memmap:
        try:
            st = os.stat(self.path)
        except FileNotFoundError as err:
            raise SourceNotFoundError(self.path, "it was there when the dataset was loaded") from err
        key = (self.path, st.st_ino, st.st_size, st.st_mtime_ns, self.offset, self.dtype.str, self.n_pixels)
        with _MAPS_LOCK:
            mm = _MAPS.get(key)
            if mm is not None:
                _MAPS.move_to_end(key)
                return mm
        needed = self.offset + self.n_pixels * self.dtype.itemsize
        if st.st_size < needed:
            raise SourceFormatError(
                f"{self.path}: the file is shorter than when it was loaded "
                f"({st.st_size} bytes now, {needed} needed)"
            )
        mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=(self.n_pixels,))
        with _MAPS_LOCK:
            _MAPS[key] = mm
            while len(_MAPS) > _MAX_MAPS:
                _MAPS.popitem(last=False)
        return mm

    def restrict(self, start: int, stop: int) -> MmapReader:
        return self


@dataclass(frozen=True)
class ArrayReader:
    """Pixels of an array in memory; ``base`` is the stream position of ``data[0]``."""

    data: np.ndarray = field(repr=False)
    base: int = 0
    total: int | None = None

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def n_pixels(self) -> int:
        return self.total if self.total is not None else self.data.size

    def read_pixels(self, start: int, stop: int) -> np.ndarray:
        lo, hi = start - self.base, stop - self.base
        if lo < 0 or hi > self.data.size:
            raise IndexError(
                f"pixels {start}:{stop} lie outside this reader's range "
                f"{self.base}:{self.base + self.data.size}"
            )
        return self.data[lo:hi]

    def restrict(self, start: int, stop: int) -> ArrayReader:
        lo, hi = start - self.base, stop - self.base
        return ArrayReader(self.data[lo:hi], base=start, total=self.n_pixels)


@dataclass(frozen=True)
class RecordReader:
    """Pixels of frames stored one per fixed-size record, with bytes around each frame.

    The file holds, from ``offset``, ``n_records`` records of ``record_bytes`` each; a
    frame of ``frame_size`` pixels of ``dtype`` starts ``skip`` bytes into its record
    (a blockfile's 6-byte frame header before it, an EMPAD frame's 2 rows of
    metadata after it). The frames are read through a memory map, so the reader
    pickles as its layout; ``read_pixels`` returns a copy (the frames are not
    contiguous in the file).
    """

    path: str
    offset: int
    record_bytes: int
    skip: int
    dtype: np.dtype
    frame_size: int
    n_records: int

    def __post_init__(self) -> None:
        if self.skip + self.frame_size * np.dtype(self.dtype).itemsize > self.record_bytes:
            raise ValueError(f"{self.path}: a frame of {self.frame_size} pixels does not fit "
                             f"in a record of {self.record_bytes} bytes from byte {self.skip}")

    @property
    def n_pixels(self) -> int:
        return self.n_records * self.frame_size

    def read_pixels(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.empty(0, dtype=self.dtype)
        fs, rb, skip = self.frame_size, self.record_bytes, self.skip
        frame_bytes = fs * np.dtype(self.dtype).itemsize
        f0, f1 = start // fs, -(-stop // fs)
        mapped = self.mapped_bytes
        records = MmapReader(self.path, self.offset, np.dtype(np.uint8), mapped)
        end = min(f1 * rb, mapped)
        block = records.read_pixels(f0 * rb, end)
        frames = np.empty((f1 - f0, frame_bytes), dtype=np.uint8)
        full = min(f1 - f0, len(block) // rb)
        frames[:full] = block[: full * rb].reshape(full, rb)[:, skip : skip + frame_bytes]
        if full < f1 - f0:  # the file's last record, cut after its frame
            frames[full] = block[full * rb + skip : full * rb + skip + frame_bytes]
        flat = frames.view(self.dtype).reshape(-1)
        return flat[start - f0 * fs : stop - f0 * fs]

    @property
    def mapped_bytes(self) -> int:
        """Bytes the frames span: the last record needs its frame, not what follows it."""
        if not self.n_records:
            return 0
        return (self.n_records - 1) * self.record_bytes + self.skip + self.frame_size * np.dtype(self.dtype).itemsize

    def restrict(self, start: int, stop: int) -> RecordReader:
        return self
