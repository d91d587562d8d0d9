"""``dm``: a Gatan DigitalMicrograph file (``.dm3``, ``.dm4``), tags parsed by rosettasciio.

rosettasciio (``pip install 'detflow[formats]'``) parses the file's tag tree and says
where each image's pixels start, their dtype and shape; detflow then memory-maps the
pixels, as for ``.npy``, so a partition pickles as (path, offset, dtype). A 4-D image
(a 4D-STEM stack: DM lists the dimensions ``kx, ky, x, y``) is ``nav + sig``; a 3-D one
is a stack of frames (nav ``(n,)``; give ``nav_shape`` for the scan). A file with
several images (a thumbnail, a survey image) opens the one image with three or more
dimensions, or the one ``image`` names (its index among the file's images, thumbnails
left out).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError, SourceFormatError, SourceNotFoundError, import_optional
from detflow.nodes.params import Param, non_negative
from detflow.sources.base import FrameReader, read_head
from detflow.sources.file import FileSource
from detflow.sources.params import COMMON_PARAMS, path_param
from detflow.sources.params import checked as _checked
from detflow.sources.readers import MmapReader

__all__ = ["DMSource"]


class DMSource(FileSource):
    """A dataset from a DigitalMicrograph file.

    Parameters
    ----------
    path
        The ``.dm3`` / ``.dm4`` file.
    image
        Which image of the file (its index, thumbnails left out); by default the one
        image with three or more dimensions.
    nav_shape, sig_shape, sync_offset, allow_short
        As for every source.
    """

    name: ClassVar[str] = "dm"
    params_spec: ClassVar[tuple[Param, ...]] = (
        path_param("the .dm3 or .dm4 file"),
        Param("image", int, default=None, check=non_negative,
              doc="index of the image in the file (default: the one with 3 or more dimensions)"),
        *COMMON_PARAMS,
    )
    suffixes: ClassVar[tuple[str, ...]] = (".dm3", ".dm4")

    @classmethod
    def can_open(cls, path: str) -> bool:
        """Version 3 or 4 (big-endian) at byte 0, a byte-order flag of 0 or 1, then a tag of the root group."""
        head = read_head(path, 32)
        if len(head) < 27:
            return False
        version = struct.unpack_from(">I", head, 0)[0]
        if version == 4:
            order, first_tag = struct.unpack_from(">I", head, 12)[0], head[26]
        elif version == 3:
            order, first_tag = struct.unpack_from(">I", head, 8)[0], head[18]
        else:
            return False
        return order in (0, 1) and first_tag in (20, 21)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        image: int | None = None,
        nav_shape: Sequence[int] | None = None,
        sig_shape: Sequence[int] | None = None,
        sync_offset: int = 0,
        allow_short: bool = False,
    ) -> None:
        self.image = None if image is None else _checked(type(self), "image", image)
        super().__init__(path, nav_shape=nav_shape, sig_shape=sig_shape, sync_offset=sync_offset,
                         allow_short=allow_short)

    def _open(self) -> tuple[tuple[int, ...], tuple[int, ...], FrameReader]:
        dm = import_optional("rsciio.digitalmicrograph", "the dm source")
        if not os.path.isfile(self.path):
            raise SourceNotFoundError(self.path)
        try:
            signals = dm.file_reader(self.path, lazy=True)
        except Exception as err:  # the tag parser meets a damaged file with whatever it trips on
            raise SourceFormatError(f"{self.path}: not a readable DigitalMicrograph file ({err})") from err
        images = [(tuple(int(n) for n in s["data"].shape), s) for s in signals]
        listed = ", ".join(f"{i}: {shape} {s['data'].dtype}" for i, (shape, s) in enumerate(images)) or "none"
        if self.image is None:
            stacks = [i for i, (shape, _) in enumerate(images) if len(shape) >= 3]
            if len(stacks) != 1:
                raise ConfigurationError(f"{self.path}: give parameter 'image': expected exactly one image with "
                                         f"3 or more dimensions; the file holds {listed}")
            self.image = stacks[0]
        if self.image >= len(images):
            raise ConfigurationError(f"{self.path}: parameter 'image' is {self.image}; the file holds {listed}")
        shape, signal = images[self.image]
        if len(shape) < 2:
            raise SourceFormatError(f"{self.path}: image {self.image} has shape {shape}; frames need two dimensions")
        pixels = _pixel_block(signal)
        dtype = np.dtype(signal["data"].dtype)
        packed = signal["original_metadata"]["ImageList"]["TagGroup0"]["ImageData"].get("DataType") == 5
        if dtype.kind not in "biuf" or packed:  # 5: complex numbers packed as float32 (an FFT)
            raise SourceFormatError(f"{self.path}: image {self.image} holds {dtype} pixels, not numbers")
        dtype = dtype.newbyteorder("<" if pixels.get("endian", "little") == "little" else ">")
        offset, declared = int(pixels["offset"]), math.prod(shape)
        available = max(0, (os.path.getsize(self.path) - offset) // dtype.itemsize)
        frame = math.prod(shape[-2:])
        n_pixels = declared if available >= declared else available // frame * frame  # a cut file: whole frames
        return shape[:-2] or (1,), shape[-2:], MmapReader(self.path, offset, dtype, n_pixels)


def _pixel_block(signal: dict[str, Any]) -> dict[str, Any]:
    """Where rosettasciio found an image's pixels: ``{"offset", "size", "endian", ...}``."""
    try:
        block = signal["original_metadata"]["ImageList"]["TagGroup0"]["ImageData"]["Data"]
    except (KeyError, TypeError) as err:
        raise SourceFormatError(f"the DigitalMicrograph reader gave no pixel location ({err})") from err
    if not isinstance(block, dict) or "offset" not in block:
        raise SourceFormatError("the DigitalMicrograph reader gave the pixels, not where they are")
    return block
