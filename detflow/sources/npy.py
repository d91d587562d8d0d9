"""``npy``: a NumPy ``.npy`` file, memory-mapped (never read whole into memory)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from detflow.errors import ConfigurationError, SourceFormatError, SourceNotFoundError
from detflow.nodes.params import Param
from detflow.sources.base import FrameReader, read_head
from detflow.sources.file import FileSource
from detflow.sources.params import COMMON_PARAMS, SIG_DIMS, path_param
from detflow.sources.readers import MmapReader

__all__ = ["NpySource"]


class NpySource(FileSource):
    """A dataset from a ``.npy`` file of shape ``nav_shape + sig_shape``.

    Parameters
    ----------
    path
        The ``.npy`` file.
    sig_dims
        How many trailing axes are the signal (default 2).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "scan.npy")
    >>> np.save(p, np.zeros((2, 3, 8, 8), dtype=np.uint16))
    >>> NpySource(path=p).shape
    Shape(nav=(2, 3), sig=(8, 8))
    """

    name: ClassVar[str] = "npy"
    params_spec: ClassVar[tuple[Param, ...]] = (path_param("the .npy file"), SIG_DIMS, *COMMON_PARAMS)
    suffixes: ClassVar[tuple[str, ...]] = (".npy",)

    @classmethod
    def can_open(cls, path: str) -> bool:
        """``\\x93NUMPY`` at byte 0."""
        return read_head(path, 6) == b"\x93NUMPY"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sig_dims: int = 2,
        nav_shape: Sequence[int] | None = None,
        sig_shape: Sequence[int] | None = None,
        sync_offset: int = 0,
        allow_short: bool = False,
    ) -> None:
        self._sig_dims = sig_dims
        super().__init__(path, nav_shape=nav_shape, sig_shape=sig_shape, sync_offset=sync_offset,
                         allow_short=allow_short)

    def _open(self) -> tuple[tuple[int, ...], tuple[int, ...], FrameReader]:
        if not os.path.isfile(self.path):
            raise SourceNotFoundError(self.path)
        try:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(f)
                offset = f.tell()
        except ValueError as err:
            raise SourceFormatError(f"{self.path}: not a valid .npy file ({err})") from err
        if fortran and len(shape) > 1:
            raise SourceFormatError(
                f"{self.path}: Fortran-ordered arrays cannot be read frame by frame; "
                "save it with np.save(path, np.ascontiguousarray(arr))"
            )
        if dtype.hasobject or dtype.kind not in "biufc":
            raise SourceFormatError(f"{self.path}: dtype {dtype} is not numeric")
        if not 1 <= self._sig_dims < len(shape):
            raise ConfigurationError(
                f"npy source {self.path!r}: parameter 'sig_dims' must be between 1 and "
                f"{len(shape) - 1} for an array of shape {shape}; got {self._sig_dims}"
            )
        n_pixels = int(np.prod(shape))
        needed = offset + n_pixels * dtype.itemsize
        size = os.path.getsize(self.path)
        if size < needed:
            raise SourceFormatError(
                f"{self.path}: truncated: the header declares shape {shape} {dtype} "
                f"({needed} bytes with header) but the file has {size} bytes"
            )
        nav, sig = tuple(shape[: -self._sig_dims]), tuple(shape[-self._sig_dims :])
        return nav, sig, MmapReader(self.path, offset, np.dtype(dtype), n_pixels)
