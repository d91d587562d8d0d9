"""``blockfile``: a NanoMegas ASTAR / TopSpin blockfile (``.blo``), frames memory-mapped.

A blockfile holds a header (``IMGBLO`` at byte 0, then the signature ``0x0102``), a
virtual bright-field image, then one record per scan position: a 6-byte record
header (``AA 55`` and a 32-bit frame counter) and a square frame of ``uint8``. The
header fields read here (:data:`HEADER`) are the first ones of the layout
rosettasciio defines (``rsciio.blockfile._api.get_header_dtype_list``); the tests check files
that rosettasciio writes. The frames are read straight from the file through a
memory map, skipping each record's 6-byte header, so a partition pickles as the
file's layout and the source needs no optional package. The scan is ``(NY, NX)`` as
the header says.
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np

from detflow.errors import SourceFormatError, SourceNotFoundError
from detflow.nodes.params import Param
from detflow.sources.base import FrameReader, read_head
from detflow.sources.file import FileSource
from detflow.sources.params import COMMON_PARAMS, path_param
from detflow.sources.readers import RecordReader

__all__ = ["BlockfileSource"]

#: bytes before each frame: ``AA 55`` and a little-endian uint32 frame counter
RECORD_HEADER_BYTES = 6
_MAGIC = 0x0102


def _header(endianness: str) -> np.dtype:
    """The header fields detflow needs, in the file's byte order."""
    e = endianness
    return np.dtype([("ID", "S6"), ("MAGIC", e + "u2"), ("Data_offset_1", e + "u4"), ("Data_offset_2", e + "u4"),
                     ("UNKNOWN1", e + "u4"), ("DP_SZ", e + "u2"), ("DP_rotation", e + "u2"), ("NX", e + "u2"),
                     ("NY", e + "u2")])


#: the leading header fields (little-endian); a big-endian file is read with the same layout swapped
HEADER = _header("<")


class BlockfileSource(FileSource):
    """A dataset from a blockfile.

    Parameters
    ----------
    path
        The ``.blo`` file.
    nav_shape, sig_shape, sync_offset, allow_short
        As for every source; the scan shape ``(NY, NX)`` comes from the header.
    """

    name: ClassVar[str] = "blockfile"
    params_spec: ClassVar[tuple[Param, ...]] = (path_param("the .blo file"), *COMMON_PARAMS)
    suffixes: ClassVar[tuple[str, ...]] = (".blo",)

    @classmethod
    def can_open(cls, path: str) -> bool:
        """``IMGBLO`` at byte 0."""
        return read_head(path, 6) == b"IMGBLO"

    def _open(self) -> tuple[tuple[int, ...], tuple[int, ...], FrameReader]:
        if not os.path.isfile(self.path):
            raise SourceNotFoundError(self.path)
        header = None
        for endianness in ("<", ">"):
            dtype = _header(endianness)
            head = read_head(self.path, dtype.itemsize)
            if len(head) < dtype.itemsize or head[:6] != b"IMGBLO":
                raise SourceFormatError(f"{self.path}: not a blockfile (no IMGBLO header of {dtype.itemsize} bytes)")
            candidate = np.frombuffer(head, dtype=dtype)[0]
            if int(candidate["MAGIC"]) == _MAGIC:
                header = candidate
                break
        if header is None:
            raise SourceFormatError(f"{self.path}: blockfile header signature {head[6:8].hex()} is not 0102")
        side = int(header["DP_SZ"])
        nav = (int(header["NY"]), int(header["NX"]))
        offset = int(header["Data_offset_2"])
        if side < 1 or min(nav) < 1:
            raise SourceFormatError(f"{self.path}: the header declares frames of {side}x{side} on a scan of {nav}")
        record = RECORD_HEADER_BYTES + side * side
        size = os.path.getsize(self.path)
        if offset > size:
            raise SourceFormatError(f"{self.path}: the frames start at byte {offset}, past the file's end ({size})")
        n_records = min((size - offset) // record, nav[0] * nav[1])
        reader = RecordReader(self.path, offset, record, RECORD_HEADER_BYTES, np.dtype(np.uint8), side * side,
                              n_records)
        return nav, (side, side), reader
