"""The data port: every MIB variant through the simulator and the client, and the
failures a real detector link has (garbage, gaps, silence, hang-ups), from
hand-scripted servers."""

from __future__ import annotations

import logging
import socket
import threading
import time

import numpy as np
import pytest

from detflow.errors import DetectorDisconnectedError, DetectorProtocolError, DetectorTimeoutError
from detflow.sources.live.merlin.control import MerlinControl
from detflow.sources.live.merlin.data import MerlinDataStream, RawFramesReader
from detflow.sources.live.merlin.sim import GARBAGE, MerlinSimulator
from detflow.sources.mib import MibSource
from detflow.sources.readers import ArrayReader

from .conftest import DTYPES, RawServer, Recording, frame_messages, header_message, random_frames, record


def receive_all(stream: MerlinDataStream, batch: int, dtype: object = None) -> np.ndarray:
    """The rest of the current acquisition, read ``batch`` frames at a time."""
    layout = stream.first_frame_layout
    n = stream.header.n_frames if stream.header is not None else 0
    out = np.full((n, *layout.sig_shape), 77, dtype=dtype or layout.dtype)
    pos = 0
    while pos < n:
        got = stream.read_frames(out[pos : pos + batch])
        assert got == min(batch, n - pos)
        pos += got
    assert stream.acquisition_done and stream.read_frames(out[:1]) == 0
    return out


# --- every format ------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [1, 6, 12, 24])
@pytest.mark.parametrize("raw", [False, True], ids=["nonraw", "raw"])
@pytest.mark.parametrize("layout,sig", [("1x1", (64, 64)), ("2x2", (128, 128)), ("2x2G", (130, 130))])
def test_every_format_arrives_as_written(tmp_path, depth: int, raw: bool, layout: str, sig: tuple[int, int]) -> None:
    frames = random_frames(np.random.default_rng(depth), 6, sig, depth, layout)
    rec = record(tmp_path, frames, (2, 3), counter_depth=depth, raw=raw, layout=layout, frames_per_file=4)
    with MerlinSimulator(rec.hdr, data_port=0, control_port=0) as sim, \
            MerlinDataStream("127.0.0.1", sim.data_port, timeout=5) as stream:
        header = stream.read_acquisition_header()
        assert (header.n_frames, header.scan_shape, header.counter_depth) == (6, (2, 3), depth)
        lay = stream.first_frame_layout
        assert (lay.sig_shape, lay.dtype, lay.raw, lay.counter_depth) == (sig, DTYPES[depth], raw, depth)
        got = receive_all(stream, batch=4)
    assert stream.frames_received == 6 and stream.gaps == []
    np.testing.assert_array_equal(got, frames)
    offline = MibSource(rec.hdr)
    np.testing.assert_array_equal(got, np.concatenate([p.read() for p in offline.partitions()]).reshape(got.shape))


def test_odd_frame_size_and_wider_output_dtype(tmp_path) -> None:
    frames = random_frames(np.random.default_rng(3), 7, (100, 120), 24)
    rec = record(tmp_path, frames, (1, 7))
    with MerlinSimulator(rec.hdr, data_port=0, control_port=0) as sim, \
            MerlinDataStream("127.0.0.1", sim.data_port, timeout=5) as stream:
        stream.read_acquisition_header()
        got = receive_all(stream, batch=3, dtype=np.float64)
        with pytest.raises(ValueError, match=r"uint32 frames do not fit dtype uint16"):
            stream.read_frames(np.empty((1, 100, 120), np.uint16))
        with pytest.raises(ValueError, match=r"shape \(n, 100, 120\)"):
            stream.read_frames(np.empty((1, 120, 100), np.uint32))
    np.testing.assert_array_equal(got, frames)


@pytest.mark.parametrize("chunk_bytes", [1, 10_000, 4 << 20])
@pytest.mark.parametrize("batch", [1, 7, 20, 64])
def test_batches_and_chunks_of_any_size(recording: Recording, sim: MerlinSimulator, batch: int,
                                        chunk_bytes: int) -> None:
    with MerlinDataStream("127.0.0.1", sim.data_port, timeout=5, chunk_bytes=chunk_bytes) as stream:
        stream.read_acquisition_header()
        np.testing.assert_array_equal(receive_all(stream, batch), recording.frames)


def test_nav_shape_sends_part_of_the_recording(recording: Recording) -> None:
    with MerlinSimulator(recording.hdr, data_port=0, control_port=0, nav_shape=(3, 2)) as sim, \
            MerlinDataStream("127.0.0.1", sim.data_port, timeout=5) as stream:
        header = stream.read_acquisition_header()
        assert (header.n_frames, header.scan_shape, header.frames_per_trigger) == (6, (3, 2), 2)
        np.testing.assert_array_equal(receive_all(stream, 4), recording.frames[:6])


def test_a_mib_file_without_hdr(tmp_path) -> None:
    frames = random_frames(np.random.default_rng(5), 5, (32, 64), 6)
    rec = record(tmp_path, frames, (1, 5))
    rec.hdr.unlink()
    with MerlinSimulator(tmp_path / "scan.mib", data_port=0, control_port=0) as sim, \
            MerlinDataStream("127.0.0.1", sim.data_port, timeout=5) as stream:
        header = stream.read_acquisition_header()
        assert (header.n_frames, header.counter_depth) == (5, 6)
        np.testing.assert_array_equal(receive_all(stream, 2), frames)


# --- acquisitions one after another --------------------------------------------------------
def test_back_to_back_acquisitions_and_stop(recording: Recording) -> None:
    with MerlinSimulator(recording.hdr, data_port=0, control_port=0, continuous=True) as sim, \
            MerlinDataStream("127.0.0.1", sim.data_port, timeout=5) as stream:
        for _ in range(3):
            stream.read_acquisition_header()
            np.testing.assert_array_equal(receive_all(stream, 8), recording.frames)
        with MerlinControl("127.0.0.1", sim.control_port) as ctl:
            ctl.cmd("STOPACQUISITION")
        stream.timeout = 0.5
        for _ in range(1000):  # what was already on its way, then silence
            try:
                stream.read_acquisition_header()
                receive_all(stream, 20)
            except DetectorTimeoutError:
                break
        else:
            pytest.fail("STOPACQUISITION did not end the continuous replay")


def test_the_next_header_skips_what_is_left_of_an_acquisition(recording: Recording, caplog) -> None:
    with MerlinSimulator(recording.hdr, data_port=0, control_port=0, continuous=True) as sim, \
            MerlinDataStream("127.0.0.1", sim.data_port, timeout=5) as stream:
        stream.read_acquisition_header()
        out = np.zeros((5, 64, 64), np.uint16)
        assert stream.read_frames(out) == 5 and not stream.acquisition_done
        with caplog.at_level(logging.WARNING, logger="detflow.sources.live.merlin.data"):
            stream.read_acquisition_header()
        assert "skipping the rest of the current acquisition (5 of 20 frames arrived)" in caplog.text
        assert stream.frames_received == 0 and stream.next_index == 0
        np.testing.assert_array_equal(receive_all(stream, 20), recording.frames)


def test_reconnect_and_start_again(recording: Recording, sim: MerlinSimulator) -> None:
    stream = MerlinDataStream("127.0.0.1", sim.data_port, timeout=5)
    for _ in range(2):
        stream.connect()
        stream.read_acquisition_header()
        out = np.zeros((8, 64, 64), np.uint16)
        assert stream.read_frames(out) == 8  # leave the rest unread: close mid-acquisition
        np.testing.assert_array_equal(out, recording.frames[:8])
        stream.close()
    with stream, MerlinControl("127.0.0.1", sim.control_port) as ctl:
        stream.read_acquisition_header()
        np.testing.assert_array_equal(receive_all(stream, 20), recording.frames)
        while True:  # the sender may not have marked the first acquisition finished yet
            try:
                ctl.cmd("STARTACQUISITION")  # a second acquisition on the same connection
                break
            except Exception as err:
                assert "busy" in str(err)
                time.sleep(0.01)
        stream.read_acquisition_header()
        np.testing.assert_array_equal(receive_all(stream, 20), recording.frames)


def test_wait_trigger_over_control_and_trigger_port(recording: Recording) -> None:
    with MerlinSimulator(recording.hdr, data_port=0, control_port=0, trigger_port=0, wait_trigger=True) as sim, \
            MerlinDataStream("127.0.0.1", sim.data_port, timeout=5) as stream, \
            MerlinControl("127.0.0.1", sim.control_port) as ctl:
        with pytest.raises(DetectorTimeoutError, match="no acquisition header within 0.2 s"):
            stream.read_acquisition_header(timeout=0.2)  # not armed: nothing is sent
        ctl.cmd("STARTACQUISITION")
        stream.read_acquisition_header()
        ctl.cmd("SOFTTRIGGER")
        np.testing.assert_array_equal(receive_all(stream, 16), recording.frames)
        # the simulator-only trigger port: arms if needed, answers FINISH when all is sent
        with socket.create_connection(("127.0.0.1", sim.trigger_port), timeout=5) as trig:
            trig.sendall(b"TRIGGER\n")
            stream.read_acquisition_header()
            np.testing.assert_array_equal(receive_all(stream, 16), recording.frames)
            assert trig.recv(100) == b"FINISH\n"


def test_frame_rate_paces_the_frames(recording: Recording) -> None:
    with MerlinSimulator(recording.hdr, data_port=0, control_port=0, frame_rate=100) as sim:
        # from before the connection, so a client that is late to read cannot shorten what it measures:
        # the simulator sends frame 20 no earlier than ~18 frame periods after frame 1 (it sends in pairs)
        t0 = time.monotonic()
        with MerlinDataStream("127.0.0.1", sim.data_port, timeout=5) as stream:
            stream.read_acquisition_header()
            np.testing.assert_array_equal(receive_all(stream, 4), recording.frames)
            assert time.monotonic() - t0 >= 0.15  # 20 frames at 100/s


# --- stale data and garbage -----------------------------------------------------------------
def test_garbage_before_the_header_is_skipped(recording: Recording, caplog) -> None:
    with MerlinSimulator(recording.hdr, data_port=0, control_port=0, garbage=True) as sim, \
            MerlinDataStream("127.0.0.1", sim.data_port, timeout=5) as stream:
        with caplog.at_level(logging.WARNING, logger="detflow.sources.live.merlin.data"):
            stream.read_acquisition_header()
        np.testing.assert_array_equal(receive_all(stream, 8), recording.frames)
    assert stream.skipped_bytes == len(GARBAGE)
    assert f"skipped {len(GARBAGE)} bytes" in caplog.text


@pytest.mark.parametrize("drain", [True, False])
def test_drain_discards_stale_data(drain: bool, monkeypatch) -> None:
    rng = np.random.default_rng(9)
    stale, fresh = random_frames(rng, 2, (16, 16), 12), random_frames(rng, 3, (16, 16), 12)
    stale_sent = threading.Event()

    def script(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(header_message(2) + b"".join(frame_messages(stale)))  # an earlier client's leftovers
        stale_sent.set()
        server.release.wait(30)  # the fresh acquisition starts once the client is connected (and drained)
        conn.sendall(header_message(3) + b"".join(frame_messages(fresh)))

    # the leftovers are on the socket before the client starts draining, however late the server thread runs
    drain_after_stale = MerlinDataStream._drain

    def _drain(self: MerlinDataStream, seconds: float) -> None:
        assert stale_sent.wait(30), "the test server never sent its stale data"
        drain_after_stale(self, seconds)

    monkeypatch.setattr(MerlinDataStream, "_drain", _drain)
    with RawServer(script) as server, MerlinDataStream("127.0.0.1", server.port, timeout=5, drain=drain) as stream:
        server.release.set()
        header = stream.read_acquisition_header()
        if drain:
            assert header.n_frames == 3 and stream.drained_bytes == len(header_message(2)) + 2 * (15 + 384 + 512)
            np.testing.assert_array_equal(receive_all(stream, 2), fresh)
        else:
            assert header.n_frames == 2 and stream.drained_bytes == 0
            np.testing.assert_array_equal(receive_all(stream, 2), stale)


@pytest.mark.parametrize("junk", [b"\x00" * 20000, b"MPX,0000000012,HD" + b"x" * 3, b"MQ1,000004"])
@pytest.mark.parametrize("then", ["close", "wait"])
def test_garbage_between_frames_is_an_error(junk: bytes, then: str) -> None:
    frames = random_frames(np.random.default_rng(2), 3, (16, 16), 12)

    known_wrong = len(junk) >= 19 or then == "close"  # known to be wrong without waiting for more bytes

    def script(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(header_message(6) + b"".join(frame_messages(frames)) + junk)
        if then == "wait":
            server.release.wait(120)

    # where the error needs no more bytes, the stream's timeout is long: waiting for it would show
    timeout = 60 if known_wrong else 2
    with RawServer(script) as server, MerlinDataStream("127.0.0.1", server.port, timeout=timeout) as stream:
        stream.read_acquisition_header()
        out = np.zeros((6, 16, 16), np.uint16)
        t0 = time.monotonic()
        with pytest.raises(DetectorProtocolError) as info:
            stream.read_frames(out)
        msg = str(info.value)
    if known_wrong:
        assert time.monotonic() - t0 < timeout / 2
    assert f"at byte {3 * (15 + 384 + 512)} of the acquisition's frame data" in msg
    assert "frame message 3 should start (after sequence number 3)" in msg
    assert "cannot be resynchronised safely" in msg and "3 of 6 frames arrived" in msg
    assert info.value.frames_received == 3
    np.testing.assert_array_equal(out[:3], frames)


def test_a_frame_of_another_size_is_an_error() -> None:
    small, big = random_frames(np.random.default_rng(4), 2, (16, 16), 12), random_frames(np.random.default_rng(4), 1,
                                                                                        (32, 32), 12)

    def script(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(header_message(4) + b"".join(frame_messages(small)) + frame_messages(big, first=3)[0])
        server.release.wait(10)

    with RawServer(script) as server, MerlinDataStream("127.0.0.1", server.port, timeout=2) as stream:
        stream.read_acquisition_header()
        with pytest.raises(DetectorProtocolError, match=r"frame size changed mid-acquisition .* frame message 2 .*"
                                                        r"expected 'MPX,0000000897,MQ1,'.*got 'MPX,0000002433,MQ1,'"):
            stream.read_frames(np.zeros((4, 16, 16), np.uint16))


# --- lost frames, hang-ups, silence -------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 2, 3, 5, 8])
def test_sequence_gaps_leave_zero_slots(batch: int, caplog) -> None:
    frames = random_frames(np.random.default_rng(6), 8, (16, 16), 12) + 1  # no frame is all zero
    seqs = [1, 2, 4, 5, 8]  # 3, 6 and 7 lost

    def script(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(header_message(8) + b"".join(frame_messages(frames[np.array(seqs) - 1], sequences=seqs)))
        server.release.wait(10)

    with RawServer(script) as server, MerlinDataStream("127.0.0.1", server.port, timeout=2) as stream:
        stream.read_acquisition_header()
        with caplog.at_level(logging.WARNING, logger="detflow.sources.live.merlin.data"):
            got = receive_all(stream, batch)
    assert stream.gaps == [(3, 4), (6, 8)] and stream.frames_received == 5
    expected = frames.copy()
    expected[[2, 5, 6]] = 0
    np.testing.assert_array_equal(got, expected)
    assert "frames 3..3 of the acquisition are missing" in caplog.text
    assert "frames 6..7 of the acquisition are missing" in caplog.text


def receive_raw_all(stream: MerlinDataStream, batch: int) -> np.ndarray:
    """The acquisition through :meth:`read_raw` (as the live receiver takes it) and
    :class:`RawFramesReader` (as a worker decodes it), ``batch`` frames at a time."""
    layout = stream.first_frame_layout
    parts = []
    while not stream.acquisition_done:
        buf = np.empty(stream.raw_bytes(batch), dtype=np.uint8)
        rows, data_offset = stream.raw_rows(buf, batch)
        where, error = stream.read_raw(rows)
        assert error is None, error
        offsets = np.where(where < 0, -1, data_offset + where * rows.strides[0])
        reader = RawFramesReader(ArrayReader(buf), offsets, layout, 0, len(where) * layout.frame_size)
        parts.append(reader.read_pixels(0, reader.n_pixels).reshape(-1, *layout.sig_shape))
    return np.concatenate(parts)


@pytest.mark.parametrize("batch", [1, 2, 3, 5, 8])
def test_sequence_gaps_leave_zero_frames_when_workers_decode(batch: int) -> None:
    frames = random_frames(np.random.default_rng(6), 8, (16, 16), 12) + 1  # no frame is all zero
    seqs = [1, 2, 4, 5, 8]  # 3, 6 and 7 lost

    def script(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(header_message(8) + b"".join(frame_messages(frames[np.array(seqs) - 1], sequences=seqs)))
        server.release.wait(10)

    with RawServer(script) as server, MerlinDataStream("127.0.0.1", server.port, timeout=2) as stream:
        stream.read_acquisition_header()
        got = receive_raw_all(stream, batch)
    assert stream.gaps == [(3, 4), (6, 8)] and stream.frames_received == 5
    expected = frames.copy()
    expected[[2, 5, 6]] = 0
    np.testing.assert_array_equal(got, expected)


def test_lost_frames_at_the_end_and_the_next_acquisition(caplog) -> None:
    first, second = random_frames(np.random.default_rng(8), 6, (16, 16), 12), random_frames(np.random.default_rng(9),
                                                                                             2, (16, 16), 12)

    def script(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(header_message(6) + b"".join(frame_messages(first[:4]))
                     + header_message(2) + b"".join(frame_messages(second)))
        server.release.wait(10)

    with RawServer(script) as server, MerlinDataStream("127.0.0.1", server.port, timeout=2) as stream:
        stream.read_acquisition_header()
        out = np.zeros((6, 16, 16), np.uint16)
        with caplog.at_level(logging.WARNING, logger="detflow.sources.live.merlin.data"):
            assert stream.read_frames(out) == 4
        assert stream.acquisition_done and stream.frames_received == 4
        assert "the next acquisition header arrived after frame 4 of 6" in caplog.text
        np.testing.assert_array_equal(out[:4], first[:4])
        assert stream.read_acquisition_header().n_frames == 2
        np.testing.assert_array_equal(receive_all(stream, 2), second)


def test_sequence_numbers_going_backwards_are_an_error() -> None:
    frames = random_frames(np.random.default_rng(1), 3, (16, 16), 12)

    def script(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(header_message(3) + b"".join(frame_messages(frames, sequences=[1, 2, 2])))
        server.release.wait(10)

    with RawServer(script) as server, MerlinDataStream("127.0.0.1", server.port, timeout=2) as stream:
        stream.read_acquisition_header()
        with pytest.raises(DetectorProtocolError, match="frame message 2 carries sequence number 2 after 2"):
            stream.read_frames(np.zeros((3, 16, 16), np.uint16))


@pytest.mark.parametrize("partial", [0, 10, 500])
def test_hang_up_mid_acquisition(partial: int) -> None:
    frames = random_frames(np.random.default_rng(12), 5, (16, 16), 12)
    msgs = frame_messages(frames)

    def script(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(header_message(5) + b"".join(msgs[:3]) + msgs[3][:partial])

    with RawServer(script) as server, MerlinDataStream("127.0.0.1", server.port, timeout=5) as stream:
        stream.read_acquisition_header()
        out = np.zeros((5, 16, 16), np.uint16)
        with pytest.raises(DetectorDisconnectedError,
                           match=r"closed mid-acquisition \(3 of 5 frames arrived\)") as info:
            stream.read_frames(out)
    assert info.value.frames_received == 3 and stream.next_index == 3
    assert isinstance(info.value, ConnectionError)
    np.testing.assert_array_equal(out[:3], frames[:3])


def test_the_simulator_stopping_mid_acquisition(recording: Recording) -> None:
    sim = MerlinSimulator(recording.hdr, data_port=0, control_port=0, frame_rate=50).start()
    try:
        with MerlinDataStream("127.0.0.1", sim.data_port, timeout=5) as stream:
            stream.read_acquisition_header()
            out = np.zeros((20, 64, 64), np.uint16)
            assert stream.read_frames(out[:2]) == 2
            sim.stop()
            with pytest.raises(DetectorDisconnectedError, match=r"of 20 frames arrived") as info:
                stream.read_frames(out[2:])
        k = info.value.frames_received
        assert k is not None and 2 <= k < 20
        np.testing.assert_array_equal(out[:k], recording.frames[:k])
    finally:
        sim.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("merlin-sim")]


def test_silence_is_a_timeout_and_reading_can_go_on() -> None:
    frames = random_frames(np.random.default_rng(13), 4, (16, 16), 12)
    msgs = frame_messages(frames)

    def script(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(header_message(4) + b"".join(msgs[:2]) + msgs[2][:100])
        server.release.wait(120)  # silent far longer than the stream's timeout
        conn.sendall(msgs[2][100:] + msgs[3])

    with RawServer(script) as server, MerlinDataStream("127.0.0.1", server.port, timeout=0.5) as stream:
        stream.read_acquisition_header()
        out = np.zeros((4, 16, 16), np.uint16)
        t0 = time.monotonic()
        message = r"no complete frame within 0.5 s \(2 of 4 frames arrived\)"
        with pytest.raises(DetectorTimeoutError, match=message) as info:
            stream.read_frames(out)
        # the 0.5 s timeout, not the server's silence (which lasts until release)
        assert time.monotonic() - t0 < 60 and info.value.frames_received == 2
        server.release.set()  # the detector goes on: the half frame was kept
        assert stream.read_frames(out[2:]) == 2
    np.testing.assert_array_equal(out, frames)


def test_no_header_is_a_timeout() -> None:
    def silent(conn: socket.socket, server: RawServer) -> None:
        server.release.wait(10)

    with RawServer(silent) as server, MerlinDataStream("127.0.0.1", server.port, timeout=0.3) as stream:
        with pytest.raises(DetectorTimeoutError, match=r"no acquisition header within 0.3 s") as info:
            stream.read_acquisition_header()
        assert info.value.frames_received is None
