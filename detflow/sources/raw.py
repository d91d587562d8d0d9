"""``raw``: a headerless binary file of frames in C order."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any, ClassVar

from detflow.errors import SourceFormatError, SourceNotFoundError
from detflow.nodes.params import REQUIRED, Param, non_negative
from detflow.sources.base import FrameReader, check_frame_layout
from detflow.sources.file import FileSource
from detflow.sources.params import COMMON_PARAMS, path_param
from detflow.sources.params import checked as _checked
from detflow.sources.readers import MmapReader

__all__ = ["RawSource"]


class RawSource(FileSource):
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
    params_spec: ClassVar[tuple[Param, ...]] = (
        path_param("the raw file"),
        Param("dtype", "dtype", doc="pixel dtype, e.g. uint16 or >u2"),
        *(dataclasses.replace(p, default=REQUIRED) if p.name in ("nav_shape", "sig_shape") else p
          for p in COMMON_PARAMS),  # the file carries no shape
        Param("offset", int, default=0, check=non_negative, doc="bytes to skip at the start (a header)"),
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        dtype: Any,
        nav_shape: Sequence[int],
        sig_shape: Sequence[int],
        offset: int = 0,
        sync_offset: int = 0,
        allow_short: bool = False,
    ) -> None:
        self._dtype = _checked(type(self), "dtype", dtype)
        self._offset = _checked(type(self), "offset", offset)
        self._native = (tuple(nav_shape), tuple(sig_shape))
        super().__init__(path, nav_shape=nav_shape, sig_shape=sig_shape, sync_offset=sync_offset,
                         allow_short=allow_short)

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
