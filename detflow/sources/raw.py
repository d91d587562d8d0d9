"""``raw``: a headerless binary file of frames in C order."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError, SourceFormatError, SourceNotFoundError
from detflow.sources.base import FrameReader, Source, check_frame_layout
from detflow.sources.readers import MmapReader, forget_mappings

__all__ = ["RawSource"]


class RawSource(Source):
    """A dataset from a raw binary file.

    Parameters
    ----------
    path
        The file.
    dtype
        Pixel dtype, e.g. ``"uint16"`` or ``">u2"`` for big-endian data.
    nav_shape, sig_shape
        Required: the file carries no shape.
    offset
        Bytes to skip at the start of the file (a header).
    sync_offset
        As for every source.

    The file (after ``offset``) must hold a whole number of frames, at least as many as
    ``nav_shape`` has positions; anything else is an error naming the file. Frames that
    ``sync_offset`` shifts past either end read as zeros.
    """

    name: ClassVar[str] = "raw"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        dtype: Any = None,
        nav_shape: Sequence[int] | None = None,
        sig_shape: Sequence[int] | None = None,
        offset: int = 0,
        sync_offset: int = 0,
        allow_short: bool = False,
    ) -> None:
        for name, value in (("path", path), ("dtype", dtype), ("nav_shape", nav_shape),
                            ("sig_shape", sig_shape)):
            if value is None:
                raise ConfigurationError(f"raw source: parameter {name!r} is required")
        self.path = os.fspath(path)  # type: ignore[arg-type]
        try:
            self._dtype = np.dtype(dtype)
        except TypeError as err:
            raise ConfigurationError(f"raw source: parameter 'dtype': not a dtype: {dtype!r}") from err
        if offset < 0:
            raise ConfigurationError(f"raw source: parameter 'offset' must be >= 0; got {offset}")
        self._offset = int(offset)
        self._native = (tuple(nav_shape), tuple(sig_shape))  # type: ignore[arg-type]
        super().__init__(nav_shape=nav_shape, sig_shape=sig_shape, sync_offset=sync_offset,
                         allow_short=allow_short)

    def close(self) -> None:
        """Unmap the file in this process (partitions already handed out stay valid)."""
        forget_mappings(self.path)

    def describe(self) -> str:
        return f"raw source {self.path!r}"

    def _open(self) -> tuple[tuple[int, ...], tuple[int, ...], FrameReader]:
        if not os.path.isfile(self.path):
            raise SourceNotFoundError(self.path)
        nav, sig = self._native
        size = os.path.getsize(self.path) - self._offset
        if size < 0:
            raise SourceFormatError(
                f"{self.path}: offset {self._offset} is past the end of the file "
                f"({size + self._offset} bytes)"
            )
        frames = check_frame_layout(self.path, size, self._dtype.itemsize, math.prod(sig))
        n_pixels = frames * math.prod(sig)
        return nav, sig, MmapReader(self.path, self._offset, self._dtype, n_pixels)
