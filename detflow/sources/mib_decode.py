"""Merlin ``.mib`` frames: the frame header, the pixel layouts, and decoding.

A ``.mib`` file is frames back to back, each ``[header][pixels]`` with no file header
(format notes: ``shared/reference/protocols.md`` section 1.1). The frame header
("MQ1") is comma-separated ASCII, NUL-padded to its declared size; :func:`parse_frame_header`
reads it and :class:`MibLayout` is what the reader keeps of it: how many bytes a frame
takes and how its pixels become an image.

Pixel layouts, and how they decode:

* ``U08``/``U16``/``U32``/``U64`` (non-raw): the image, row-major, big-endian. Decoding
  is a strided view of the file and one byte-swapping copy (numpy, no Python loop).
* ``R64`` (raw), counter depth 1, 6, 12 or 24: chip rows in reversed 8-byte chunks;
  a quad (``2x2``/``2x2G``) puts the four chips' rows side by side and stores the
  bottom half rotated by 180 degrees. Decoded by the numba kernels of
  :mod:`detflow.sources.mib_kernels` (imported on first use) from a table of where
  each chip row goes (:meth:`MibLayout.segment_table`). ``2x2G`` frames keep their
  2-pixel gaps (514x514 for 256-pixel chips); the gap pixels read as 0.

Native dtypes: uint8 for depths 1 and 6, uint16 for 12, uint32 for 24 (raw too: a
24-bit value never fits 16 bits), uint64 for ``U64``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detflow.errors import SourceFormatError

__all__ = ["FrameHeader", "MibLayout", "decode_frames", "parse_frame_header"]

MAGIC = b"MQ1,"
#: bytes read to be sure of holding a whole frame header (768 for quads)
MAX_HEADER_BYTES = 4096

_U_DTYPES: dict[str, np.dtype] = {"U08": np.dtype("uint8"), "U16": np.dtype("uint16"), "U32": np.dtype("uint32"),
             "U64": np.dtype("uint64")}
_U_DEPTH = {"U08": 6, "U16": 12, "U32": 24, "U64": 48}
_RAW_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("uint8"), 6: np.dtype("uint8"), 12: np.dtype("uint16"), 24: np.dtype("uint32"),
}
#: raw bits stored per pixel of the header's width (R24's header width is doubled)
_RAW_STORE_BITS = {1: 1, 6: 8, 12: 16, 24: 16}
#: pixels per 8-byte chunk of a raw chip row
_RAW_CHUNK_PX = {1: 64, 6: 8, 12: 4, 24: 4}
GAP = 2


@dataclass(frozen=True)
class FrameHeader:
    """The fields of one MQ1 frame header that a reader needs."""

    sequence: int
    header_bytes: int
    n_chips: int
    width: int
    height: int
    pixel_format: str
    assembly: str
    chip_select: str
    counter_depth: int


def parse_frame_header(raw: bytes, where: str) -> FrameHeader:
    """Parse the frame header at the start of ``raw``; ``where`` names file and frame."""
    if not raw.startswith(MAGIC):
        shown = raw[:16].decode("latin-1").encode("unicode_escape").decode()
        raise SourceFormatError(
            f"{where}: not a Merlin frame header: expected it to start with 'MQ1,'; got {shown!r}"
        )
    text = raw.decode("latin-1")
    parts = text.split(",", 3)
    try:
        header_bytes = int(parts[2])
    except (IndexError, ValueError):
        raise SourceFormatError(f"{where}: frame header: field 2 (header size) is not a number") from None
    if not 64 <= header_bytes <= len(raw):
        raise SourceFormatError(
            f"{where}: frame header declares a size of {header_bytes} bytes; expected 64 to {len(raw)}"
        )
    fields = [p.strip() for p in text[:header_bytes].split(",") if "\x00" not in p]
    try:
        sequence, n_chips = int(fields[1]), int(fields[3])
        width, height = int(fields[4]), int(fields[5])
        pixel_format, assembly, chip_select = fields[6].upper(), fields[7], fields[8]
    except (IndexError, ValueError):
        raise SourceFormatError(
            f"{where}: frame header does not parse: expected "
            f"'MQ1,<seq>,<size>,<chips>,<width>,<height>,<format>,<layout>,...'; got {text[:80]!r}"
        ) from None
    depth: int | None = None
    if "MQ1A" in fields:  # ..., MQ1A, <timestamp>, <exposure ns>, <counter depth>
        try:
            depth = int(fields[fields.index("MQ1A") + 3])
        except (IndexError, ValueError):
            raise SourceFormatError(f"{where}: frame header: the MQ1A extension has no counter depth") from None
    elif pixel_format in _U_DEPTH:
        depth = _U_DEPTH[pixel_format]
    else:
        raise SourceFormatError(
            f"{where}: raw ({pixel_format}) frame header without the MQ1A extension: the counter "
            "depth, needed to decode raw data, is unknown"
        )
    if pixel_format not in _U_DTYPES and pixel_format != "R64":
        raise SourceFormatError(
            f"{where}: pixel format {pixel_format!r} is not supported; expected one of "
            f"{', '.join([*_U_DTYPES, 'R64'])}"
        )
    if pixel_format == "R64" and depth not in _RAW_DTYPES:
        raise SourceFormatError(f"{where}: counter depth {depth} for raw data; expected 1, 6, 12 or 24")
    if width < 1 or height < 1 or n_chips < 1:
        raise SourceFormatError(f"{where}: frame header: bad frame size {width}x{height} or {n_chips} chips")
    return FrameHeader(sequence, header_bytes, n_chips, width, height, pixel_format, assembly,
                       chip_select, depth)


@dataclass(frozen=True)
class MibLayout:
    """How the frames of an acquisition are stored; small, picklable, no data."""

    header_bytes: int
    data_bytes: int
    pixel_format: str
    counter_depth: int
    assembly: str
    sig_shape: tuple[int, int]
    #: raw only: chips side by side in a raw row (1 or 4) and a chip's size
    n_segments: int = 1
    chip_shape: tuple[int, int] = (0, 0)

    @classmethod
    def from_header(cls, fh: FrameHeader, where: str) -> MibLayout:
        fmt = fh.pixel_format
        if fmt != "R64":
            nbytes = fh.width * fh.height * _U_DTYPES[fmt].itemsize
            return cls(fh.header_bytes, nbytes, fmt, fh.counter_depth, fh.assembly, (fh.height, fh.width))
        depth = fh.counter_depth
        data_bytes = fh.width * fh.height * _RAW_STORE_BITS[depth] // 8
        raw_w = fh.width // 2 if depth == 24 else fh.width
        assembly = fh.assembly.upper().replace("X", "x")
        if fh.n_chips == 1:
            nseg, cw, ch = 1, raw_w, fh.height
            sig = (ch, cw)
        elif fh.n_chips == 4 and assembly in ("2x2", "2x2G"):
            if raw_w % 4:
                raise SourceFormatError(f"{where}: raw quad frame width {raw_w} is not 4 chips wide")
            nseg, cw, ch = 4, raw_w // 4, fh.height
            gap = GAP if assembly.endswith("G") else 0
            sig = (2 * ch + gap, 2 * cw + gap)
        else:
            raise SourceFormatError(
                f"{where}: raw frames with {fh.n_chips} chips in layout {fh.assembly!r} are not "
                "supported; raw data is read for single chips and for 2x2 / 2x2G quads"
            )
        if cw % _RAW_CHUNK_PX[depth]:
            raise SourceFormatError(
                f"{where}: raw {depth}-bit chip rows of {cw} pixels are not a whole number of "
                f"8-byte chunks ({_RAW_CHUNK_PX[depth]} pixels each)"
            )
        return cls(fh.header_bytes, data_bytes, fmt, depth, assembly, sig, nseg, (ch, cw))

    @property
    def raw(self) -> bool:
        return self.pixel_format == "R64"

    @property
    def frame_bytes(self) -> int:
        """Bytes from one frame header to the next."""
        return self.header_bytes + self.data_bytes

    @property
    def dtype(self) -> np.dtype:
        return _RAW_DTYPES[self.counter_depth] if self.raw else _U_DTYPES[self.pixel_format]

    @property
    def frame_size(self) -> int:
        return self.sig_shape[0] * self.sig_shape[1]

    def describe(self) -> str:
        h, w = self.sig_shape
        kind = f"raw R64 {self.counter_depth}-bit" if self.raw else f"{self.pixel_format}"
        return f"{h}x{w} {kind} ({self.assembly.strip()})"

    def segment_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(row_base, row_sign, col0, col_step)`` per chip of a raw row, for the kernels.

        Raw row ``r`` of a quad holds ``[Q4 | Q3 | Q2 | Q1]``; with image height ``H`` and
        the right half starting at column ``right`` (after the gap for ``2x2G``)::

            Q1 -> img[r, 0:cw]                 Q2 -> img[r, right:right+cw]
            Q3 -> img[H-1-r, 0:cw][::-1]       Q4 -> img[H-1-r, right:right+cw][::-1]
        """
        if self.n_segments == 1:
            one = np.ones(1, dtype=np.int64)
            zero = np.zeros(1, dtype=np.int64)
            return zero, one, zero, one
        h, w = self.sig_shape
        cw = self.chip_shape[1]
        right = w - cw
        # raw order Q4, Q3, Q2, Q1
        row_base = np.array([h - 1, h - 1, 0, 0], dtype=np.int64)
        row_sign = np.array([-1, -1, 1, 1], dtype=np.int64)
        col0 = np.array([right + cw - 1, cw - 1, right, 0], dtype=np.int64)
        col_step = np.array([-1, -1, 1, 1], dtype=np.int64)
        return row_base, row_sign, col0, col_step


def decode_frames(layout: MibLayout, frames: np.ndarray, out: np.ndarray) -> None:
    """Decode ``frames`` (``(n, frame_bytes)`` uint8, headers included) into ``out``.

    ``out`` has shape ``(n, *layout.sig_shape)`` and dtype ``layout.dtype``.
    """
    data = frames[:, layout.header_bytes : layout.frame_bytes]
    if not layout.raw:
        be = _U_DTYPES[layout.pixel_format].newbyteorder(">")
        np.copyto(out, data.view(be).reshape(out.shape))
        return
    if out.strides[-1] != out.itemsize:  # decoding writes whole rows of bytes
        tmp = np.empty(out.shape, dtype=out.dtype)
        decode_frames(layout, frames, tmp)
        out[...] = tmp
        return
    if layout.n_segments > 1 and layout.assembly.endswith("G"):
        h, w = layout.sig_shape
        ch, cw = layout.chip_shape
        out[:, ch : h - ch] = 0
        out[:, :, cw : w - cw] = 0
    if layout.n_segments == 1 and layout.counter_depth in (6, 12):
        # R6 and R12 are byte-reversed 8-byte chunks: one byte swap of each 64-bit
        # word puts every pixel of a chip row in place, a copy as fast as the
        # non-raw byte swap
        np.copyto(out.view(np.uint64), data.view(">u8").reshape(*out.shape[:2], -1))
        return
    from detflow.sources import mib_kernels

    kernel = {1: mib_kernels.decode_r1, 6: mib_kernels.decode_r6, 12: mib_kernels.decode_r12,
              24: mib_kernels.decode_r24}[layout.counter_depth]
    n = len(frames)
    fb, hb = layout.frame_bytes, layout.header_bytes
    if frames.flags.c_contiguous and fb % 8 == 0 and hb % 8 == 0 and frames.ctypes.data % 8 == 0:
        buf, first, stride = frames.reshape(-1).view(np.uint64), hb // 8, fb // 8
    else:  # headers of odd sizes, or a strided input: the pixel data alone, copied
        buf, first, stride = np.ascontiguousarray(data).reshape(-1).view(np.uint64), 0, layout.data_bytes // 8
    ch, cw = layout.chip_shape
    if layout.n_segments == 1 and out.strides[1] == cw * out.itemsize:
        ch, cw = 1, ch * cw  # one chip, rows back to back: a frame is one long chip row
    kernel(buf, first, stride, n, out, *layout.segment_table(), cw, ch)
