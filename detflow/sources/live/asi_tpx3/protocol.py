"""The ASI Timepix3 sparse stream: its five 32-byte headers, dtype codes and chunk layout.

Every header is 32 bytes, little endian, first byte a tag::

    0x00 AcquisitionStart  tag, version, format_type, nav_h, nav_w, indptr_dtype,
                           sig_h, sig_w, indices_dtype, sequence, 15 reserved
    0x01 ScanStart         tag, sequence, metadata_length, 19 reserved
                           (followed by metadata_length bytes of metadata)
    0x02 ArrayChunk        tag, value_dtype, nframes, nnz, indices_offset,
                           values_offset, 14 reserved
                           (followed by values_offset + nnz * sizeof(value) bytes:
                           indptr (nframes + 1, from 0) at 0, indices at
                           indices_offset, values at values_offset)
    0x03 ScanEnd           tag, sequence, 27 reserved
    0x04 AcquisitionEnd    tag, sequence, 27 reserved

Dtype codes: 0 U1, 1 U4 (not byte-addressable: rejected), 2 U8, 3 U16, 4 U32, 5 U64.
This module only packs and unpacks; :mod:`.data` receives and :mod:`.sim` sends.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from detflow.errors import DetectorProtocolError

__all__ = [
    "HEADER_SIZE",
    "AcquisitionEnd",
    "AcquisitionStart",
    "ArrayChunk",
    "ScanEnd",
    "ScanStart",
    "code_of",
    "dtype_of",
    "pack_chunk",
    "unpack",
]

HEADER_SIZE = 32
FORMAT_CSR = 0

#: dtype code -> numpy dtype; None for the sub-byte codes no receiver can address
DTYPES: dict[int, np.dtype | None] = {
    0: None, 1: None, 2: np.dtype("<u1"), 3: np.dtype("<u2"), 4: np.dtype("<u4"), 5: np.dtype("<u8"),
}
_NAMES = {0: "U1", 1: "U4", 2: "U8", 3: "U16", 4: "U32", 5: "U64"}


def dtype_of(code: int, field: str, where: str) -> np.dtype:
    """The numpy dtype of a dtype code, or a protocol error naming the field."""
    if code not in DTYPES:
        raise DetectorProtocolError(
            f"{where}: {field} has dtype code {code}; expected one of 2 (U8), 3 (U16), 4 (U32), 5 (U64)")
    dt = DTYPES[code]
    if dt is None:
        raise DetectorProtocolError(
            f"{where}: {field} is {_NAMES[code]} (dtype code {code}), packed below one byte per element; "
            "only U8, U16, U32 and U64 can be received: configure the detector's stream with one of them")
    return dt


def code_of(dtype: np.dtype | type) -> int:
    """The dtype code of an unsigned integer dtype (for senders)."""
    dt = np.dtype(dtype)
    for code, d in DTYPES.items():
        if d is not None and d.kind == dt.kind and d.itemsize == dt.itemsize:
            return code
    raise ValueError(f"the stream carries unsigned integers of 1, 2, 4 or 8 bytes; got {dt}")


@dataclass(frozen=True)
class AcquisitionStart:
    """An acquisition begins: both shapes and the index dtypes travel in band."""

    tag: ClassVar[int] = 0
    fmt: ClassVar[struct.Struct] = struct.Struct("<BBBHHBHHBI15x")
    version: int
    format_type: int
    nav_shape: tuple[int, int]
    indptr_code: int
    sig_shape: tuple[int, int]
    indices_code: int
    sequence: int

    def pack(self) -> bytes:
        return self.fmt.pack(self.tag, self.version, self.format_type, *self.nav_shape, self.indptr_code,
                             *self.sig_shape, self.indices_code, self.sequence)

    @classmethod
    def _unpack(cls, raw: bytes) -> AcquisitionStart:
        _, ver, ft, nh, nw, ip, sh, sw, ix, seq = cls.fmt.unpack(raw)
        return cls(ver, ft, (nh, nw), ip, (sh, sw), ix, seq)


@dataclass(frozen=True)
class ScanStart:
    """A scan begins; ``metadata_length`` bytes of metadata follow the header."""

    tag: ClassVar[int] = 1
    fmt: ClassVar[struct.Struct] = struct.Struct("<BIQ19x")
    sequence: int
    metadata_length: int

    def pack(self) -> bytes:
        return self.fmt.pack(self.tag, self.sequence, self.metadata_length)

    @classmethod
    def _unpack(cls, raw: bytes) -> ScanStart:
        _, seq, n = cls.fmt.unpack(raw)
        return cls(seq, n)


@dataclass(frozen=True)
class ArrayChunk:
    """``nframes`` frames of CSR data follow: ``payload_size`` bytes."""

    tag: ClassVar[int] = 2
    fmt: ClassVar[struct.Struct] = struct.Struct("<BBIIII14x")
    value_code: int
    nframes: int
    nnz: int
    indices_offset: int
    values_offset: int

    def pack(self) -> bytes:
        return self.fmt.pack(self.tag, self.value_code, self.nframes, self.nnz, self.indices_offset,
                             self.values_offset)

    @classmethod
    def _unpack(cls, raw: bytes) -> ArrayChunk:
        _, vc, nf, nnz, io, vo = cls.fmt.unpack(raw)
        return cls(vc, nf, nnz, io, vo)


@dataclass(frozen=True)
class ScanEnd:
    tag: ClassVar[int] = 3
    fmt: ClassVar[struct.Struct] = struct.Struct("<BI27x")
    sequence: int

    def pack(self) -> bytes:
        return self.fmt.pack(self.tag, self.sequence)

    @classmethod
    def _unpack(cls, raw: bytes) -> ScanEnd:
        return cls(cls.fmt.unpack(raw)[1])


@dataclass(frozen=True)
class AcquisitionEnd:
    tag: ClassVar[int] = 4
    fmt: ClassVar[struct.Struct] = struct.Struct("<BI27x")
    sequence: int

    def pack(self) -> bytes:
        return self.fmt.pack(self.tag, self.sequence)

    @classmethod
    def _unpack(cls, raw: bytes) -> AcquisitionEnd:
        return cls(cls.fmt.unpack(raw)[1])


Header = AcquisitionStart | ScanStart | ArrayChunk | ScanEnd | AcquisitionEnd
_BY_TAG: dict[int, type[Header]] = {c.tag: c for c in (AcquisitionStart, ScanStart, ArrayChunk, ScanEnd,
                                                       AcquisitionEnd)}


def unpack(raw: bytes, *, offset: int, where: str) -> Header:
    """The header in the 32 bytes ``raw``, read at stream byte ``offset``."""
    cls = _BY_TAG.get(raw[0])
    if cls is None:
        raise DetectorProtocolError(
            f"{where}: byte {offset} of the stream: expected a header tag 0-4 (AcquisitionStart, ScanStart, "
            f"ArrayChunk, ScanEnd, AcquisitionEnd); got 0x{raw[0]:02x} (first bytes {raw[:8].hex(' ')}); "
            "is this an ASI Timepix3 CSR stream?")
    return cls._unpack(raw)


def pack_chunk(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, *, indptr_dtype: np.dtype,
               indices_dtype: np.dtype, pad: int = 0) -> tuple[ArrayChunk, list[bytes]]:
    """One ArrayChunk header and its payload parts, with ``pad`` bytes between the parts."""
    nframes = len(indptr) - 1
    ip = np.ascontiguousarray(indptr - indptr[0], dtype=np.dtype(indptr_dtype).newbyteorder("<"))
    ix = np.ascontiguousarray(indices, dtype=np.dtype(indices_dtype).newbyteorder("<"))
    vals = np.ascontiguousarray(values)
    values = vals.astype(vals.dtype.newbyteorder("<"), copy=False)
    ix_off = ip.nbytes + pad
    val_off = ix_off + ix.nbytes + pad
    head = ArrayChunk(code_of(values.dtype), nframes, len(ix), ix_off, val_off)
    gap = bytes(pad)
    parts = [ip.tobytes(), gap, ix.tobytes(), gap, values.tobytes()] if pad else [
        ip.tobytes(), ix.tobytes(), values.tobytes()]
    return head, parts
