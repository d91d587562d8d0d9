"""Frame readers shared by the formats: memory-mapped files and arrays in memory.

Both present their data as a flat pixel stream (see :mod:`detflow.sources.base`).
``MmapReader`` pickles as (path, offset, dtype, size) and maps the file on the worker
that reads it; mapping costs microseconds, so it is done per read, which keeps readers
free of open handles and safe to send anywhere. ``ArrayReader`` holds a flat view of an
array; ``restrict`` narrows it to one partition's pixels, so pickling a partition of an
in-memory dataset carries that partition's data and nothing more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from detflow.errors import SourceFormatError, SourceNotFoundError

__all__ = ["ArrayReader", "MmapReader"]


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
        try:
            mm = np.memmap(
                self.path,
                dtype=self.dtype,
                mode="r",
                offset=self.offset + start * self.dtype.itemsize,
                shape=(stop - start,),
            )
        except FileNotFoundError as err:
            raise SourceNotFoundError(self.path, "it was there when the dataset was loaded") from err
        except ValueError as err:  # file shrank since load: mmap past its end
            raise SourceFormatError(
                f"{self.path}: cannot read pixels {start}:{stop}; the file is shorter than when "
                f"it was loaded ({os.path.getsize(self.path)} bytes now)"
            ) from err
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
