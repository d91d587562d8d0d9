"""The five headers against the struct formats of the spec, and the dtype codes."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from detflow.errors import DetectorProtocolError
from detflow.sources.live.asi_tpx3.protocol import (
    AcquisitionEnd,
    AcquisitionStart,
    ArrayChunk,
    ScanEnd,
    ScanStart,
    code_of,
    dtype_of,
    pack_chunk,
    unpack,
)

SPEC = {  # the wire formats, written out independently of the module
    AcquisitionStart: "<BBBHHBHHBI15x", ScanStart: "<BIQ19x", ArrayChunk: "<BBIIII14x",
    ScanEnd: "<BI27x", AcquisitionEnd: "<BI27x",
}


@pytest.mark.parametrize("head", [
    AcquisitionStart(7, 0, (300, 2), 4, (256, 512), 3, 99),
    ScanStart(5, 2**40 + 3),
    ArrayChunk(3, 17, 1000, 72, 2072),
    ScanEnd(2**32 - 1),
    AcquisitionEnd(12),
])
def test_headers_are_32_bytes_as_the_spec_packs_them(head: object) -> None:
    raw = head.pack()  # type: ignore[attr-defined]
    assert len(raw) == 32
    fields = struct.unpack(SPEC[type(head)], raw)
    assert fields[0] == type(head).tag  # type: ignore[attr-defined]
    assert unpack(raw, offset=0, where="test") == head


def test_acquisition_start_field_order() -> None:
    raw = struct.pack("<BBBHHBHHBI15x", 0, 7, 0, 30, 40, 5, 64, 128, 2, 8)
    head = unpack(raw, offset=0, where="test")
    assert head == AcquisitionStart(7, 0, (30, 40), 5, (64, 128), 2, 8)


@pytest.mark.parametrize(("code", "name"), [(0, "U1"), (1, "U4")])
def test_sub_byte_dtypes_are_rejected_by_name(code: int, name: str) -> None:
    with pytest.raises(DetectorProtocolError, match=f"value_dtype is {name} .dtype code {code}.*U8, U16, U32"):
        dtype_of(code, "value_dtype", "here")


def test_unknown_dtype_code_and_tag() -> None:
    with pytest.raises(DetectorProtocolError, match="dtype code 9; expected one of"):
        dtype_of(9, "indptr_dtype", "here")
    with pytest.raises(DetectorProtocolError, match="byte 4096 of the stream: expected a header tag 0-4.*got 0x47"):
        unpack(b"GARBAGE!" + bytes(24), offset=4096, where="here")


@pytest.mark.parametrize("dt", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_codes_round_trip(dt: type) -> None:
    assert dtype_of(code_of(dt), "x", "here") == np.dtype(dt)


def test_chunk_layout_with_padding() -> None:
    indptr = np.array([5, 7, 7, 10])  # a slice of a bigger matrix: rebased to 0
    indices = np.array([1, 2, 3, 4, 5], np.int32)
    values = np.array([9, 8, 7, 6, 5], np.uint16)
    head, parts = pack_chunk(indptr, indices, values, indptr_dtype=np.dtype(np.uint32),
                             indices_dtype=np.dtype(np.uint16), pad=3)
    payload = b"".join(parts)
    assert (head.nframes, head.nnz, head.value_code) == (3, 5, 3)
    assert len(payload) == head.values_offset + 5 * 2
    np.testing.assert_array_equal(np.frombuffer(payload[:16], "<u4"), [0, 2, 2, 5])
    np.testing.assert_array_equal(np.frombuffer(payload[head.indices_offset:head.indices_offset + 10], "<u2"),
                                  indices)
    np.testing.assert_array_equal(np.frombuffer(payload[head.values_offset:], "<u2"), values)
    assert head.indices_offset == 16 + 3
