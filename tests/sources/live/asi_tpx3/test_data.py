"""The receiver against scripted byte streams on real sockets: faults end in clear errors
naming the byte offset, within bounded time, keeping what arrived before them."""

from __future__ import annotations

import time

import numpy as np
import pytest

import detflow as df
from detflow.errors import DetectorDisconnectedError, DetectorError, DetectorProtocolError, DetectorTimeoutError
from detflow.nodes import SumSigUDF, SumUDF
from detflow.sources.live.asi_tpx3.protocol import AcquisitionStart, ArrayChunk, ScanStart

from .conftest import NAV, ScriptedServer, stream_bytes

START = AcquisitionStart(7, 0, NAV, 4, (16, 16), 4, 0).pack()




def test_garbage_before_the_acquisition_start_names_byte_0(frames: np.ndarray) -> None:
    with ScriptedServer(b"\x7fELF" + bytes(60) + stream_bytes(frames), hang_up=False) as srv, \
            df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=srv.port, timeout=30) as conn:
        t0 = time.monotonic()
        with pytest.raises(DetectorProtocolError, match="byte 0 of the stream: expected a header tag.*got 0x7f"):
            conn.wait_for_acquisition(30)
        assert time.monotonic() - t0 < 20  # garbage is known at once, not after the timeout


@pytest.mark.parametrize(("code", "field", "name"), [(0, "indptr", "U1"), (1, "indices", "U4")])
def test_sub_byte_index_dtypes_are_refused_at_the_start(code: int, field: str, name: str) -> None:
    head = AcquisitionStart(7, 0, NAV, code if field == "indptr" else 4, (16, 16),
                            code if field == "indices" else 4, 0)
    with ScriptedServer(head.pack(), hang_up=False) as srv, df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=srv.port) as conn, \
            pytest.raises(DetectorProtocolError, match=f"{field}_dtype is {name}"):
        conn.wait_for_acquisition(10)


@pytest.mark.parametrize("code", [0, 1])
def test_sub_byte_values_end_the_run_clearly(frames: np.ndarray, code: int) -> None:
    data = stream_bytes(frames, chunk_frames=8)
    chunk_at = 32 + 32  # AcquisitionStart, ScanStart without metadata
    bad = bytearray(data)
    assert bad[chunk_at] == ArrayChunk.tag
    bad[chunk_at + 1] = code
    with ScriptedServer(bytes(bad), hang_up=False) as srv, df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=srv.port, timeout=30) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10))
        with pytest.raises(DetectorProtocolError, match=f"byte {chunk_at}: ArrayChunk: value_dtype is U[14]"):
            ctx.run_udf(dataset=aq, udf=SumUDF())


def chunk_offsets(data: bytes) -> list[int]:
    """Byte offsets of the ArrayChunk headers in a stream without metadata."""
    out, pos = [], 64
    while data[pos] == ArrayChunk.tag:
        out.append(pos)
        head = ArrayChunk._unpack(data[pos:pos + 32])
        pos += 32 + head.values_offset + head.nnz * 2
    return out


def test_garbage_mid_scan_names_its_offset_and_keeps_the_frames_before(frames: np.ndarray) -> None:
    data = stream_bytes(frames, chunk_frames=8)
    at = chunk_offsets(data)[3]  # after 24 frames
    bad = data[:at] + b"\xff" * 32 + data[at + 32:]
    with ScriptedServer(bad, hang_up=False) as srv, df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=srv.port, timeout=30) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10), frames_per_partition=10)
        t0 = time.monotonic()
        with pytest.raises(DetectorProtocolError, match=f"byte {at} of the stream.*got 0xff") as info:
            ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()])
        assert time.monotonic() - t0 < 20
    assert info.value.frames_received == 24
    partial = info.value.partial_results  # type: ignore[attr-defined]
    assert partial.frames_done == 24
    flat = frames.reshape(48, 16, 16)
    np.testing.assert_array_equal(partial[0]["intensity"].data, flat[:24].sum(axis=0, dtype=np.float64))


@pytest.mark.parametrize("cut", [0, 1, 10, 31, 32 + 5])
def test_disconnect_mid_scan_says_how_many_frames_arrived(frames: np.ndarray, cut: int) -> None:
    data = stream_bytes(frames, chunk_frames=8)
    at = chunk_offsets(data)[2]  # 16 frames complete
    with ScriptedServer(data[:at + cut]) as srv, df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=srv.port, timeout=30) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10), frames_per_partition=5)
        with pytest.raises(DetectorDisconnectedError, match=f"closed the connection at byte {at + cut}.*after 16 of "
                                                            "48 frames") as info:
            ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()])
    assert info.value.frames_received == 16
    partial = info.value.partial_results  # type: ignore[attr-defined]
    assert partial.frames_done == 16
    np.testing.assert_array_equal(partial[1]["intensity"].data.reshape(-1)[:16],
                                  frames.reshape(48, -1).sum(axis=1)[:16])


def test_a_truncated_header_on_a_silent_line_times_out_naming_the_offset(frames: np.ndarray) -> None:
    data = stream_bytes(frames, chunk_frames=8)
    at = chunk_offsets(data)[1]
    with ScriptedServer(data[:at + 12], hang_up=False) as srv, df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=srv.port, timeout=0.5) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10), frames_per_partition=8)
        with pytest.raises(DetectorTimeoutError, match=f"at byte {at + 12} .12 of 32 bytes arrived") as info:
            ctx.run_udf(dataset=aq, udf=SumUDF())
    assert info.value.frames_received == 8


def test_a_partial_header_while_waiting_is_not_a_quiet_none() -> None:
    with ScriptedServer(START[:7], hang_up=False) as srv, df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=srv.port) as conn, \
            pytest.raises(DetectorTimeoutError, match="7 of 32 bytes"):
        conn.wait_for_acquisition(0.5)


def test_an_early_acquisition_end_is_an_error_with_the_count(frames: np.ndarray) -> None:
    data = stream_bytes(frames, chunk_frames=8)
    at = chunk_offsets(data)[4]
    from detflow.sources.live.asi_tpx3.protocol import AcquisitionEnd, ScanEnd

    with ScriptedServer(data[:at] + ScanEnd(0).pack() + AcquisitionEnd(0).pack(), hang_up=False) as srv, \
            df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=srv.port) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10), frames_per_partition=10)
        with pytest.raises(DetectorError, match="ended the acquisition after 32 of 48 frames") as info:
            ctx.run_udf(dataset=aq, udf=SumUDF())
    np.testing.assert_array_equal(info.value.partial_results[0]["intensity"].data,  # type: ignore[attr-defined]
                                  frames.reshape(48, 16, 16)[:32].sum(axis=0, dtype=np.float64))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("nframes", 100, "100 frames after 0, more than the 48"),
    ("nframes", 0, "nframes 0"),
    ("nnz", 2**31, ".*overlap the indptr"),
    ("huge", 2**29, "a payload of .* bytes, over the limit"),
])
def test_chunk_headers_that_cannot_be_true(frames: np.ndarray, field: str, value: int, message: str) -> None:
    data = bytearray(stream_bytes(frames, chunk_frames=8))
    head = ArrayChunk._unpack(bytes(data[64:96]))
    fields = {"value_code": head.value_code, "nframes": head.nframes, "nnz": head.nnz,
              "indices_offset": head.indices_offset, "values_offset": head.values_offset, field: value}
    if field == "huge":  # consistent offsets, but a chunk no detector sends
        del fields["huge"]
        fields.update(nnz=value, values_offset=head.indices_offset + 4 * value)
    data[64:96] = ArrayChunk(**fields).pack()
    with ScriptedServer(bytes(data), hang_up=False) as srv, df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=srv.port, timeout=30) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10))
        with pytest.raises(DetectorProtocolError, match=f"byte 64: ArrayChunk announces ({message})"):
            ctx.run_udf(dataset=aq, udf=SumUDF())


def test_metadata_is_skipped_by_its_length_and_kept(frames: np.ndarray) -> None:
    meta = b'{"hello": 1}' + bytes([0, 1, 2, 3]) * 1000  # holds bytes that look like header tags
    data = stream_bytes(frames, metadata=meta)
    with ScriptedServer(data, hang_up=False) as srv, df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=srv.port) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10))
        res = ctx.run_udf(dataset=aq, udf=SumUDF())
        assert conn.stream.scan_metadata == meta
    np.testing.assert_array_equal(res["intensity"].data, frames.sum(axis=(0, 1), dtype=np.float64))
    assert ScanStart._unpack(data[32:64]).metadata_length == len(meta)


def test_a_metadata_length_no_detector_sends_is_refused_at_once(frames: np.ndarray) -> None:
    data = bytearray(stream_bytes(frames))
    data[32:64] = ScanStart(0, 2**62).pack()
    with ScriptedServer(bytes(data), hang_up=False) as srv, df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=srv.port, timeout=30) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10))
        with pytest.raises(DetectorProtocolError, match="byte 32: ScanStart metadata_length 4611686018427387904 "
                                                        "bytes is above the limit of 64 MiB"):
            ctx.run_udf(dataset=aq, udf=SumUDF())
