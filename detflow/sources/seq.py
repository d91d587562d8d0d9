"""``seq``: a Norpix StreamPix sequence (``.seq``), as DE cameras record them, frames memory-mapped.

The format's facts (the header layout pims' ``NorpixSeq`` reads, which the tests
compare with):

* a 1024-byte header: ``0xFEED`` at byte 0 (little-endian uint32), the version at
  byte 28, then at byte 548 ``width``, ``height``, ``bit_depth``, ``bit_depth_real``,
  ``image_size_bytes``, ``image_format`` (100: monochrome), ``allocated_frames``,
  ``origin``, ``true_image_size`` (uint32 each), and at byte 620
  ``compression_format`` (0: uncompressed);
* the images start at byte 8192 (version 5 and later, StreamPix 6) or 1024 (earlier);
* each image is ``width * height`` little-endian unsigned pixels of ``bit_depth``
  bits, followed by its timestamp and padding, ``true_image_size`` bytes in all.

**Frame count.** A frame is counted when its image is in the file whole: the last
record needs its pixels, not its timestamp or padding. A header whose
``allocated_frames`` is smaller than what the file holds (space allocated ahead, a
file that grew past a finished recording) wins, as the number of frames the camera
wrote. The file holds no scan shape: frames form one line unless ``nav_shape`` says
otherwise.
"""

from __future__ import annotations

import os
import struct
from typing import ClassVar

import numpy as np

from detflow.errors import SourceFormatError, SourceNotFoundError
from detflow.nodes.params import Param
from detflow.sources.base import FrameReader, read_head
from detflow.sources.file import FileSource
from detflow.sources.params import COMMON_PARAMS, path_param
from detflow.sources.readers import RecordReader

__all__ = ["SeqHeader", "SeqSource", "read_seq_header"]

_MAGIC = 0xFEED
_HEADER_BYTES = 1024
_IMAGE_INFO = struct.Struct("<9I")  # width ... true_image_size, at byte 548
_MONOCHROME = 100


class SeqHeader:
    """The fields of a ``.seq`` header detflow uses (see the module docstring)."""

    def __init__(self, path: str, head: bytes) -> None:
        if len(head) < _HEADER_BYTES:
            raise SourceFormatError(f"{path}: {len(head)} bytes: shorter than a Norpix .seq header (1024)")
        magic, = struct.unpack_from("<I", head, 0)
        if magic != _MAGIC:
            raise SourceFormatError(f"{path}: not a Norpix .seq file (0x{magic:X} at byte 0, not 0xFEED)")
        self.version, = struct.unpack_from("<i", head, 28)
        (self.width, self.height, self.bit_depth, self.bit_depth_real, self.image_size_bytes, self.image_format,
         self.allocated_frames, self.origin, self.true_image_size) = _IMAGE_INFO.unpack_from(head, 548)
        self.compression_format, = struct.unpack_from("<I", head, 620)
        self.image_offset = 8192 if self.version >= 5 else 1024
        if self.compression_format != 0:
            raise SourceFormatError(f"{path}: compressed .seq files (format {self.compression_format}) "
                                    "are not supported; export the sequence uncompressed")
        if self.image_format != _MONOCHROME:
            raise SourceFormatError(f"{path}: image format {self.image_format} is not monochrome (100)")
        if self.bit_depth not in (8, 16, 32):
            raise SourceFormatError(f"{path}: {self.bit_depth}-bit pixels; expected 8, 16 or 32")
        if self.width < 1 or self.height < 1:
            raise SourceFormatError(f"{path}: the header declares {self.width}x{self.height} images")
        if self.image_bytes > self.true_image_size:
            raise SourceFormatError(f"{path}: images of {self.image_bytes} bytes do not fit in the records of "
                                    f"{self.true_image_size} bytes the header declares")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(f"<u{self.bit_depth // 8}")

    @property
    def image_bytes(self) -> int:
        return self.width * self.height * self.bit_depth // 8

    def frames_in(self, file_size: int) -> int:
        """Frames whose image lies whole in a file of ``file_size`` bytes, at most ``allocated_frames``."""
        room = file_size - self.image_offset
        whole = 0 if room < self.image_bytes else (room - self.image_bytes) // self.true_image_size + 1
        return min(whole, self.allocated_frames) if self.allocated_frames else whole


def read_seq_header(path: str) -> SeqHeader:
    return SeqHeader(path, read_head(path, _HEADER_BYTES))


class SeqSource(FileSource):
    """A dataset from a Norpix ``.seq`` file.

    Parameters
    ----------
    path
        The ``.seq`` file.
    nav_shape, sig_shape, sync_offset, allow_short
        As for every source; the frames form one line, ``nav_shape`` gives the scan.
    """

    name: ClassVar[str] = "seq"
    params_spec: ClassVar[tuple[Param, ...]] = (path_param("the .seq file"), *COMMON_PARAMS)
    suffixes: ClassVar[tuple[str, ...]] = (".seq",)

    @classmethod
    def can_open(cls, path: str) -> bool:
        """``0xFEED`` (little-endian uint32) at byte 0 and ``Norpix seq`` (UTF-16) at byte 4."""
        head = read_head(path, 24)
        return head[:4] == b"\xed\xfe\x00\x00" and head[4:24] == "Norpix seq".encode("utf-16-le")

    def _open(self) -> tuple[tuple[int, ...], tuple[int, ...], FrameReader]:
        if not os.path.isfile(self.path):
            raise SourceNotFoundError(self.path)
        header = read_seq_header(self.path)
        self.header = header
        n = header.frames_in(os.path.getsize(self.path))
        if n == 0:
            raise SourceFormatError(f"{self.path}: holds no whole frame ({header.width}x{header.height}, "
                                    f"{header.bit_depth}-bit, from byte {header.image_offset})")
        reader = RecordReader(self.path, header.image_offset, header.true_image_size, 0, header.dtype,
                              header.width * header.height, n)
        return (n,), (header.height, header.width), reader
