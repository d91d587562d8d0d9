"""README promises of the live receiver, on real sockets: the partition buffer size, how far
the receiver reads ahead of processing, and the default socket timeout.

The numbers are the README's, written out here (not imported from the code), so that a
change of the documented value or behaviour fails a test.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse

import detflow as df
from detflow.errors import DetectorTimeoutError
from detflow.nodes import UDF, SumUDF
from detflow.sources.live import base as live_base
from detflow.sources.live.asi_tpx3.sim import AsiTpx3Simulator
from detflow.sources.live.merlin.protocol import encode_message
from detflow.sources.live.merlin.sim import MerlinSimulator
from detflow.sources.mib_write import write_mib

#: README, "Live acquisition": one buffer per partition of about 32 MiB
DOC_PARTITION_BYTES = 32 * 2**20
#: README: partitions received and waiting for the workers, besides the one being filled
DOC_WAITING = 3
#: README: "Every socket call has a timeout (`timeout=`, default 10 s)"
DOC_TIMEOUT = 10.0
#: README, ASI Timepix3: "default 4096 frames per partition"
DOC_ASI_FRAMES = 4096


def write_scan(path: Path, nav: tuple[int, int], sig: tuple[int, int], seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).integers(0, 4096, size=(*nav, *sig), dtype=np.uint16)
    write_mib(path, data, counter_depth=12)
    return data


# --- the partition buffer: about 32 MiB unless frames_per_partition says otherwise ------------------
def test_default_partition_buffer_is_32_mib(tmp_path: Path) -> None:
    sig = (128, 256)  # 64 KiB a frame: 512 frames in 32 MiB
    data = write_scan(tmp_path / "scan.hdr", (20, 30), sig)  # 600 frames
    per_part = DOC_PARTITION_BYTES // (sig[0] * sig[1] * 2)
    with MerlinSimulator(tmp_path / "scan.hdr", data_port=0, control_port=0) as s, \
            df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("merlin").open(api_port=s.control_port, data_port=s.data_port) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10))
        parts = list(ctx.run_udf_iter(dataset=aq, udf=SumUDF()))
    assert np.diff([0, *(p.frames_done for p in parts)]).tolist() == [per_part, 600 - per_part]
    np.testing.assert_array_equal(parts[-1].buffers[0]["intensity"].data, data.sum(axis=(0, 1), dtype=np.float64))


def test_asi_default_partition_is_4096_frames() -> None:
    nav, sig = (80, 64), (8, 8)  # 5120 frames
    rng = np.random.default_rng(5)
    m = scipy.sparse.csr_array((rng.random((nav[0] * nav[1], 64)) < 0.1).astype(np.uint16))
    with AsiTpx3Simulator(m, port=0, nav_shape=nav, sig_shape=sig, chunk_frames=300) as s, \
            df.LiveContext.make_with("inline") as ctx, ctx.make_connection("asi_tpx3").open(data_port=s.port) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10))
        done = [part.frames_done for part in ctx.run_udf_iter(dataset=aq, udf=SumUDF())]
    assert np.diff([0, *done]).tolist() == [DOC_ASI_FRAMES, 5120 - DOC_ASI_FRAMES]


# --- look-ahead: the partition being processed, 3 waiting, 1 being filled; then the socket waits -----
class HoldFirst(UDF):
    """Holds up the first partition until ``release()`` says the receiver is where it stops."""

    def __init__(self, release: Any) -> None:
        super().__init__(release=release)

    def get_result_buffers(self) -> dict[str, Any]:
        return {"total": self.buffer(kind="single", dtype="float64")}

    def process_partition(self, partition: Any) -> None:
        if self.meta.slice.origin[0] == 0:
            self.params.release()
        self.results.total[:] += partition.sum(dtype=np.float64)

    def merge(self, dest: Any, src: Any) -> None:
        dest.total[:] += src.total


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every LivePartitions made in the test (to see when its receive queue is full)."""
    made: list[Any] = []
    init = live_base.LivePartitions.__init__

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(live_base.LivePartitions, "__init__", recording)
    return made


def hold_until_stuck(receivers: list[Any], frames_read: Any, fpp: int) -> tuple[dict[str, int], Any]:
    """``(seen, release)``: ``release`` (for :class:`HoldFirst`) waits until the receiver
    can go no further (its queue full and the partition after those received), then notes
    in ``seen`` how many frames it had taken off the socket. An unbounded receiver never
    fills its queue: then the wait ends at the deadline and the count is the whole scan."""
    seen: dict[str, int] = {}

    def release() -> None:
        deadline = time.monotonic() + 60
        parts = receivers[-1]
        while time.monotonic() < deadline:
            # stuck: a full queue (of whatever size it has) and one more partition received
            if parts._queue.full() and frames_read() >= (1 + parts._queue.maxsize + 1) * fpp:
                break
            time.sleep(0.01)
        seen["frames"] = frames_read()

    return seen, release


def test_merlin_receiver_reads_at_most_3_partitions_ahead(tmp_path: Path, receivers: list[Any]) -> None:
    fpp = 10
    data = write_scan(tmp_path / "scan.hdr", (10, 12), (32, 32))  # 12 partitions of 10
    with MerlinSimulator(tmp_path / "scan.hdr", data_port=0, control_port=0) as s, \
            df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("merlin").open(api_port=s.control_port, data_port=s.data_port) as conn:
        seen, release = hold_until_stuck(receivers, lambda: conn.data.frames_received, fpp)
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10), frames_per_partition=fpp)
        res = ctx.run_udf(dataset=aq, udf=HoldFirst(release))
    # the one being processed, 3 waiting, 1 received and waiting for room: no more
    assert seen["frames"] == (1 + DOC_WAITING + 1) * fpp
    assert float(res["total"].data[0]) == float(data.sum(dtype=np.float64))


def test_asi_receiver_reads_at_most_3_partitions_ahead(receivers: list[Any]) -> None:
    fpp = 10
    nav, sig = (12, 10), (8, 8)
    rng = np.random.default_rng(6)
    m = scipy.sparse.csr_array((rng.random((120, 64)) < 0.2).astype(np.uint16))
    with AsiTpx3Simulator(m, port=0, nav_shape=nav, sig_shape=sig, chunk_frames=5) as s, \
            df.LiveContext.make_with("inline") as ctx, ctx.make_connection("asi_tpx3").open(data_port=s.port) as conn:
        seen, release = hold_until_stuck(receivers, lambda: conn.stream.frames, fpp)
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10), frames_per_partition=fpp)
        res = ctx.run_udf(dataset=aq, udf=HoldFirst(release))
    assert seen["frames"] == (1 + DOC_WAITING + 1) * fpp
    assert float(res["total"].data[0]) == float(m.sum())


# --- the default socket timeout: 10 s -----------------------------------------------------------
class SilentAfter:
    """A Merlin data port that sends an acquisition header and ``k`` frames, then nothing;
    ``sent_at`` is when its last byte went out."""

    def __init__(self, payload: bytes) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.payload = payload
        self.sent_at: float | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(30)
        conn, _ = self.listener.accept()
        with conn:
            conn.sendall(self.payload)
            self.sent_at = time.monotonic()
            self.done.wait(300)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def silent_server(tmp_path: Path) -> Iterator[tuple[SilentAfter, Path]]:
    path = tmp_path / "scan.hdr"
    write_scan(path, (4, 5), (16, 16))
    mib = path.with_suffix(".mib").read_bytes()
    frame = len(mib) // 20
    frames = [encode_message(mib[i : i + frame]) for i in range(0, 7 * frame, frame)]
    server = SilentAfter(encode_message(path.read_bytes()) + b"".join(frames))
    yield server, path
    server.stop()


def test_default_socket_timeout_is_10_s(silent_server: tuple[SilentAfter, Path]) -> None:
    server, path = silent_server
    with MerlinSimulator(path, data_port=0, control_port=0, wait_trigger=True) as s, \
            df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("merlin").open(api_port=s.control_port, data_port=server.port) as conn:
        assert conn.timeout == DOC_TIMEOUT
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(30))
        with pytest.raises(DetectorTimeoutError, match="7 of 20 frames") as info:
            ctx.run_udf(dataset=aq, udf=SumUDF())
        failed_at = time.monotonic()
    assert server.sent_at is not None
    waited = failed_at - server.sent_at
    # not before the documented 10 s of silence; well within it, even on a machine 5x slower
    assert DOC_TIMEOUT - 0.5 <= waited <= 5 * DOC_TIMEOUT, waited
    assert f"within {DOC_TIMEOUT:g} s" in str(info.value)
    assert info.value.frames_received == 7
