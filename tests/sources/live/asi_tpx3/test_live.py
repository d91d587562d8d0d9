"""ASI Timepix3 through LiveContext against the simulator on real sockets; results against numpy."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import numpy as np
import pytest
import scipy.sparse

import detflow as df
from detflow.nodes import UDF, SumSigUDF, SumUDF
from detflow.sources.live.asi_tpx3.sim import AsiTpx3Simulator
from detflow.sources.live.base import PREFETCH

from .conftest import NAV, SIG, sparse_frames


def check(res: Any, frames: np.ndarray) -> None:
    np.testing.assert_array_equal(res[0]["intensity"].data, frames.sum(axis=(0, 1), dtype=np.float64))
    np.testing.assert_array_equal(res[1]["intensity"].data, frames.sum(axis=(2, 3), dtype=np.float64))


def test_passive_mode_on_every_executor_several_acquisitions_per_connection(
        lctx: df.LiveContext, sim: AsiTpx3Simulator, frames: np.ndarray) -> None:
    with lctx.make_connection("asi_tpx3").open(data_port=sim.port) as conn:
        for seq in range(3):  # the simulator sends three on each connection
            pending = conn.wait_for_acquisition(10)
            assert pending is not None and pending.nav_shape == NAV and pending.nimages == 48
            assert pending.detector_config["sequence"] == seq and pending.detector_config["sig_shape"] == SIG
            aq = lctx.make_acquisition(conn=conn, pending_aq=pending, frames_per_partition=7)
            assert (aq.shape.nav, aq.shape.sig, aq.mode) == (NAV, SIG, "passive")
            check(lctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()]), frames)
            assert conn.stream.scan_metadata == bytes(range(100))
        assert conn.wait_for_acquisition(0.2) is None  # nothing more: a quiet None


_WIRE = [np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize(("indptr", "indices", "values"), list(itertools.product(_WIRE, _WIRE, _WIRE)))
def test_every_dtype_combination(indptr: type, indices: type, values: type) -> None:
    top = int(np.iinfo(values).max) if values != np.uint64 else 2**32 - 1  # the acquisition receives uint32
    frames = sparse_frames(7, dtype=np.uint64, top=min(top, 2**32 - 1)).astype(values)
    with AsiTpx3Simulator(frames, port=0, chunk_frames=3, indptr_dtype=indptr, indices_dtype=indices,
                          value_dtype=values) as s, df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=s.port) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10), frames_per_partition=11)
        res = ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()])
    check(res, frames)


def test_u64_values_that_do_not_fit_the_dtype_are_an_error_unless_asked_for() -> None:
    frames = sparse_frames(8, dtype=np.uint64, top=2**40)
    with AsiTpx3Simulator(frames, port=0, acquisitions=2) as s, df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=s.port) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10))
        with pytest.raises(df.errors.DetectorError, match="1099511627776 .uint64. does not fit.*dtype='uint64'"):
            ctx.run_udf(dataset=aq, udf=SumUDF())
    with AsiTpx3Simulator(frames, port=0) as s, df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=s.port) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10), dtype="uint64")
        res = ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()])
    check(res, frames)


def test_big_chunks_and_padding(lctx: df.LiveContext) -> None:
    """One chunk of ~1.6 MiB (LiberTEM-live's default slot is 384 KiB), parts padded."""
    frames = sparse_frames(9, nav=(16, 16), sig=(64, 64), density=0.2, dtype=np.uint32)
    with AsiTpx3Simulator(frames, port=0, chunk_frames=256, pad=5) as s, \
            lctx.make_connection("asi_tpx3").open(data_port=s.port) as conn:
        assert s.wire_bytes > 4 * 384 * 2**10
        aq = lctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10), frames_per_partition=100)
        res = lctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()])
    check(res, frames)


def test_a_nav_shape_that_disagrees_is_an_error(sim: AsiTpx3Simulator) -> None:
    with df.LiveContext.make_with("inline") as ctx, ctx.make_connection("asi_tpx3").open(data_port=sim.port) as conn:
        pending = conn.wait_for_acquisition(10)
        with pytest.raises(ValueError, match=r"'nav_shape' is \(8, 6\), but the detector announced a \(6, 8\)"):
            ctx.make_acquisition(conn=conn, pending_aq=pending, nav_shape=(8, 6))
        with pytest.raises(ValueError, match="passive mode only"):
            ctx.make_acquisition(conn=conn, nav_shape=NAV)
        aq = ctx.make_acquisition(conn=conn, pending_aq=pending, nav_shape=(-1, 8))  # agrees
        assert aq.shape.nav == NAV


def test_partitions_carry_csr_and_read_dense_blocks(sim: AsiTpx3Simulator, frames: np.ndarray) -> None:
    with df.LiveContext.make_with("inline") as ctx, ctx.make_connection("asi_tpx3").open(data_port=sim.port) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10), frames_per_partition=9)
        parts = aq.partitions()
        flat = frames.reshape(48, -1)
        seen = 0
        for p in parts:
            sp = p.read_sparse()
            assert isinstance(sp, scipy.sparse.csr_array) and sp.shape == (p.n_frames, 256)
            np.testing.assert_array_equal(sp.toarray(), flat[p.frames])
            np.testing.assert_array_equal(p.read(), frames.reshape(48, *SIG)[p.frames])
            k = min(5, p.n_frames)
            np.testing.assert_array_equal(p.read_frames(1, k), frames.reshape(48, *SIG)[p.frames][1:k])
            seen += p.n_frames
        parts.close()
        assert seen == 48 and parts.error is None


class GatedSum(UDF):
    """Sums frames; its first partition waits for ``GATE`` (a slow consumer)."""

    GATE = threading.Event()
    STARTED = threading.Event()

    def get_result_buffers(self) -> dict[str, Any]:
        return {"total": self.buffer(kind="single", dtype=np.float64)}

    def process_partition(self, partition: np.ndarray) -> None:
        if self.meta.slice.origin[0] == 0:  # LiberTEM's Slice: (row, *sig origin)
            GatedSum.STARTED.set()
            assert GatedSum.GATE.wait(120)
        self.results.total[:] += partition.sum(dtype=np.float64)

    def merge(self, dest: Any, src: Any) -> None:
        dest.total[:] += src.total


def test_back_pressure_holds_the_sender_and_drops_nothing() -> None:
    """While processing is held up the receiver stops reading; the sender waits; all events arrive."""
    rng = np.random.default_rng(11)
    nav, sig = (50, 100), (64, 64)
    n = nav[0] * nav[1]
    m = scipy.sparse.csr_array((rng.random((n, sig[0] * sig[1])) < 0.5).astype(np.uint16))
    fpp = 100
    GatedSum.GATE.clear()
    GatedSum.STARTED.clear()
    with AsiTpx3Simulator(m, port=0, nav_shape=nav, sig_shape=sig, chunk_frames=50, indices_dtype=np.uint16,
                          value_dtype=np.uint16) as s, df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("asi_tpx3").open(data_port=s.port, timeout=120) as conn:
        assert s.wire_bytes > 32 * 2**20  # far more than the socket buffers and the receive queue hold
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10), frames_per_partition=fpp)
        out: dict[str, Any] = {}

        def run() -> None:
            try:
                out["res"] = ctx.run_udf(dataset=aq, udf=GatedSum())
            except BaseException as err:  # noqa: BLE001 - reported below
                out["error"] = err
                GatedSum.STARTED.set()

        runner = threading.Thread(target=run)
        runner.start()
        try:
            assert GatedSum.STARTED.wait(60) and "error" not in out, out.get("error")
            stream = conn.stream
            last, still = -1, 0.0
            deadline = time.monotonic() + 60
            while still < 1.0 and time.monotonic() < deadline:  # until the receiver has stopped
                time.sleep(0.1)
                still = still + 0.1 if stream.offset == last else 0.0
                last = stream.offset
            assert still >= 1.0, "the receiver kept reading while processing was held up"
            assert stream.frames <= (PREFETCH + 3) * fpp < n  # bounded: a few partitions, not the scan
            assert stream.offset < s.wire_bytes // 2 and s.served == 0  # the sender is waiting
        finally:
            GatedSum.GATE.set()
            runner.join(120)
    assert "error" not in out, out.get("error")
    assert out["res"]["total"].data == pytest.approx(float(m.nnz))  # every event arrived

