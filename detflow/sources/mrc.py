"""``mrc``: an MRC file (``.mrc``, ``.mrcs``), header parsed by ``mrcfile``, frames memory-mapped.

``mrcfile`` (the CCP-EM library, ``pip install 'detflow[formats]'``) reads the header
and its extended header and says where the data start and in which dtype; the frames
are then read straight from the file, as for ``.npy``. A 3-D file is a stack of frames
(nav ``(n,)``; give ``nav_shape`` for the scan's shape); a 4-D one is ``nav + sig``.
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np

from detflow.errors import SourceFormatError, SourceNotFoundError, import_optional
from detflow.nodes.params import Param
from detflow.sources.base import FrameReader, read_head
from detflow.sources.file import FileSource
from detflow.sources.params import COMMON_PARAMS, path_param
from detflow.sources.readers import MmapReader

__all__ = ["MrcSource"]


class MrcSource(FileSource):
    """A dataset from an MRC file.

    Parameters
    ----------
    path
        The ``.mrc`` / ``.mrcs`` file.
    nav_shape, sig_shape, sync_offset, allow_short
        As for every source; a stack of ``n`` frames is nav ``(n,)`` by default.
    """

    name: ClassVar[str] = "mrc"
    params_spec: ClassVar[tuple[Param, ...]] = (path_param("the MRC file"), *COMMON_PARAMS)
    suffixes: ClassVar[tuple[str, ...]] = (".mrc", ".mrcs", ".rec", ".st")

    @classmethod
    def can_open(cls, path: str) -> bool:
        """``MAP`` at byte 208, the MRC2014 map identifier."""
        return read_head(path, 3, 208) == b"MAP"

    def _open(self) -> tuple[tuple[int, ...], tuple[int, ...], FrameReader]:
        mrcfile = import_optional("mrcfile", "the mrc source")
        if not os.path.isfile(self.path):
            raise SourceNotFoundError(self.path)
        try:
            with mrcfile.mmap(self.path, mode="r", permissive=True) as m:
                data = m.data
                if data is None:
                    raise SourceFormatError(f"{self.path}: the MRC header declares no data")
                shape, dtype, offset = tuple(data.shape), np.dtype(data.dtype), int(data.offset)
        except (ValueError, OSError) as err:
            raise SourceFormatError(f"{self.path}: not a readable MRC file ({err})") from err
        if len(shape) < 2:
            raise SourceFormatError(f"{self.path}: holds a {len(shape)}-D array; frames need two dimensions")
        nav = shape[:-2] or (1,)
        n_pixels = int(np.prod(shape))
        return nav, shape[-2:], MmapReader(self.path, offset, dtype, n_pixels)
