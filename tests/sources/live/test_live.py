"""The live framework on the memory detector: modes, hooks, shapes, failures, sinks."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import zarr

import detflow as df
from detflow.errors import ConfigurationError, DetectorDisconnectedError
from detflow.nodes import PartitionMonitorUDF, SignalMonitorUDF, SumSigUDF, SumUDF
from detflow.sources.live import Hooks, PendingAcquisition
from detflow.sources.live.base import determine_nav_shape


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 1000, size=(6, 10, 12, 16), dtype=np.uint16)


class RecordingHooks(Hooks):
    def __init__(self, nav: Any = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.nav = nav

    def on_ready_for_data(self, env: Any) -> None:
        # the acquisition listens, and no frame has been received yet
        self.calls.append(("ready", env.aq.conn.name, getattr(env.aq, "_pos", None)))

    def on_determine_nav_shape(self, env: Any) -> Any:
        self.calls.append(("nav", env.nimages, env.shape_hint, env.detector_nav_shape))
        return self.nav


# --- the nav-shape rules --------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "hook", "detector", "nimages", "expected"),
    [
        ((3, 20), (6, 10), (5, 12), 60, (3, 20)),  # a concrete shape wins over everything
        (None, (6, 10), (5, 12), 60, (6, 10)),  # then the hook
        (None, None, (5, 12), 60, (5, 12)),  # then the detector's own
        ((-1, 4), None, (5, 12), 60, (15, 4)),  # placeholders that disagree with the detector's shape
        ((-1, 12), None, (5, 12), 60, (5, 12)),  # placeholders that agree: the detector's shape
        ((-1, 4), None, None, 60, (15, 4)),  # placeholders filled from the frame count
        ((2, -1, 5), None, None, 60, (2, 6, 5)),
        (None, None, None, 64, (8, 8)),  # a square
    ],
)
def test_nav_shape_order(given: Any, hook: Any, detector: Any, nimages: int, expected: tuple[int, ...]) -> None:
    hooks = RecordingHooks(nav=hook)
    assert determine_nav_shape(given, nimages=nimages, hooks=hooks, detector_nav_shape=detector) == expected
    concrete = given is not None and -1 not in given
    assert [c[0] for c in hooks.calls] == ([] if concrete else ["nav"])


@pytest.mark.parametrize(
    ("given", "nimages", "match"),
    [
        (None, 60, "not a square number"),
        (None, 0, "endless"),
        ((-1, 7), 60, "cannot fill the -1"),
        ((-1, -1), 60, "one -1 placeholder"),
        ((0, 4), 60, "positive sizes"),
    ],
)
def test_nav_shape_errors(given: Any, nimages: int, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        determine_nav_shape(given, nimages=nimages)


def test_hook_returning_a_bad_shape_is_named() -> None:
    with pytest.raises(ConfigurationError, match="on_determine_nav_shape returned"):
        determine_nav_shape(None, nimages=4, hooks=RecordingHooks(nav=(0, 4)))


# --- active and passive mode, every executor --------------------------------------------
def test_active_mode(lctx: df.LiveContext, data: np.ndarray) -> None:
    hooks = RecordingHooks()
    with lctx.make_connection("memory").open(data=data) as conn:
        aq = lctx.make_acquisition(conn=conn, nav_shape=(6, 10), hooks=hooks, frames_per_partition=7)
        assert aq.mode == "active"
        s, ss, mon, pmon = lctx.run_udf(
            dataset=aq, udf=[SumUDF(), SumSigUDF(), SignalMonitorUDF(), PartitionMonitorUDF()]
        )
    assert hooks.calls == [("ready", "memory", 0)]
    np.testing.assert_allclose(s["intensity"].data, data.sum(axis=(0, 1), dtype=np.float64))
    np.testing.assert_allclose(ss["intensity"].data, data.sum(axis=(2, 3), dtype=np.float64))
    frames = data.reshape(-1, 12, 16)
    np.testing.assert_array_equal(mon["intensity"].data, frames[-1])
    last = (len(frames) - 1) // 7 * 7  # the last partition starts here
    np.testing.assert_allclose(pmon["intensity"].data, frames[last:].sum(axis=0, dtype=np.float64))


def test_passive_mode(lctx: df.LiveContext, data: np.ndarray) -> None:
    hooks = RecordingHooks()
    with lctx.make_connection("memory").open(data=data.reshape(60, 12, 16)) as conn:
        pending = conn.wait_for_acquisition(timeout=1)
        assert isinstance(pending, PendingAcquisition)
        assert (pending.nimages, pending.nav_shape) == (60, None)  # a stack announces no scan
        aq = lctx.make_acquisition(conn=conn, pending_aq=pending, nav_shape=(-1, 10), hooks=hooks)
        assert (aq.mode, aq.shape.nav) == ("passive", (6, 10))
        res = lctx.run_udf(dataset=aq, udf=SumSigUDF())
    assert hooks.calls == [("nav", 60, (-1, 10), None)]  # no on_ready_for_data in passive mode
    np.testing.assert_allclose(res["intensity"].data, data.sum(axis=(2, 3), dtype=np.float64))


def test_roi_and_partial_results_arrive_in_order(lctx: df.LiveContext, data: np.ndarray) -> None:
    roi = np.zeros((6, 10), dtype=bool)
    roi[1:3] = True
    roi[5, 4] = True
    with lctx.make_connection("memory").open(data=data, frame_rate=3000) as conn:
        aq = lctx.make_acquisition(conn=conn, frames_per_partition=8)
        updates = list(lctx.run_udf_iter(dataset=aq, udf=SumUDF(), roi=roi))
    seen = [r.frames_done for r in updates]
    last = updates[-1].buffers[0]
    assert seen == sorted(seen) and seen[-1] == roi.sum()
    assert len(seen) == 4  # of 8 partitions: those without ROI frames are received and dropped
    np.testing.assert_allclose(last["intensity"].data, data[roi].sum(axis=0, dtype=np.float64))


# --- failures ---------------------------------------------------------------------------
def test_disconnect_keeps_what_arrived(lctx: df.LiveContext, data: np.ndarray) -> None:
    with lctx.make_connection("memory").open(data=data, disconnect_after=25) as conn:
        aq = lctx.make_acquisition(conn=conn, frames_per_partition=10)
        results = []
        with pytest.raises(DetectorDisconnectedError, match="after 25 of 60 frames") as info:
            for r in lctx.run_udf_iter(dataset=aq, udf=SumSigUDF()):
                results.append(r)
    assert info.value.frames_received == 25
    last = results[-1]
    assert last.frames_done == 25  # frames 20..24 of the third partition were processed too
    flat = data.reshape(60, -1).sum(axis=1, dtype=np.float64)
    got = last.buffers[0]["intensity"].raw_data
    np.testing.assert_allclose(got[:25], flat[:25])
    assert info.value.partial_results.frames_done == 25


def test_disconnect_leaves_a_consistent_zarr_store(tmp_path: Any, executor: Any, data: np.ndarray) -> None:
    store = tmp_path / "out.zarr"
    with df.LiveContext(executor).make_connection("memory").open(data=data, disconnect_after=33) as conn:
        aq = conn.make_acquisition(frames_per_partition=10)
        g = df.Graph("live")
        g.source(aq)
        g.partition()
        g.udf(SumSigUDF(), id="sumsig")
        g.sink("zarr", inputs=["sumsig"], path=str(store))
        with pytest.raises(DetectorDisconnectedError):
            g.run(executor=executor)
    root = zarr.open_group(str(store), mode="r")
    assert root.attrs["complete"] is False
    valid = np.asarray(root["valid"]).reshape(-1)
    assert valid[:33].all() and not valid[33:].any()
    written = np.asarray(root["intensity"]).reshape(-1)
    np.testing.assert_allclose(written[:33], data.reshape(60, -1).sum(axis=1)[:33])


def test_abandoned_run_stops_the_receiver(data: np.ndarray) -> None:
    with df.LiveContext.make_with("threads", cpus=2) as ctx, \
            ctx.make_connection("memory").open(data=data, frame_rate=200) as conn:
        aq = ctx.make_acquisition(conn=conn, frames_per_partition=4)
        it = ctx.run_udf_iter(dataset=aq, udf=SumUDF())
        first = next(it)
        assert 0 < first.frames_done < 60
        it.close()  # the user stops watching: the receiver must not keep running
    assert not [t for t in threading.enumerate() if t.name.startswith("detflow-memory")]


# --- lifecycle --------------------------------------------------------------------------
def test_acquisitions_back_to_back_on_one_connection(data: np.ndarray) -> None:
    with df.LiveContext.make_with("inline") as ctx, ctx.make_connection("memory").open(data=data) as conn:
        sums = []
        for _ in range(3):
            aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(1))
            sums.append(ctx.run_udf(dataset=aq, udf=SumUDF())["intensity"].data)
        with pytest.raises(ConfigurationError, match="already run"):
            ctx.run_udf(dataset=aq, udf=SumUDF())
    for s in sums:
        np.testing.assert_allclose(s, data.sum(axis=(0, 1), dtype=np.float64))


def test_wrong_frame_count_and_closed_connection(data: np.ndarray) -> None:
    with df.LiveContext.make_with("inline") as ctx:
        conn = ctx.make_connection("memory").open(data=data)
        with pytest.raises(ConfigurationError, match=r"holds 64 frames, but the detector will send 60"):
            ctx.make_acquisition(conn=conn, nav_shape=(8, 8))
        aq = ctx.make_acquisition(conn=conn)
        conn.close()
        with pytest.raises(ConfigurationError, match="connection is closed"):
            ctx.run_udf(dataset=aq, udf=SumUDF())
        with pytest.raises(ConfigurationError, match="'conn'"):
            ctx.make_acquisition(conn="merlin")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="unknown detector 'nope'"):
            ctx.make_connection("nope")
        with pytest.raises(ConfigurationError, match="frame_rate"):
            ctx.make_connection("memory").open(data=data, frame_rate=0)


def test_live_context_defaults_to_the_pipelined_executor() -> None:
    from detflow.executors.base import default_cpus
    from detflow.executors.pipelined import PipelinedExecutor

    with df.LiveContext() as ctx:
        assert isinstance(ctx.executor, PipelinedExecutor)
        assert ctx.executor.n_workers == max(1, default_cpus() - 1)  # a core is left to the receiver
    with df.LiveContext.make_with("pipelined", cpus=2) as ctx:
        assert ctx.executor.n_workers == 2


def test_shared_memory_receive_leaves_no_segment(data: np.ndarray) -> None:
    from detflow import shm

    before = set(shm.live_segments())
    with df.LiveContext.make_with("pipelined", cpus=2) as ctx:
        with ctx.make_connection("memory").open(data=data) as conn:
            aq = ctx.make_acquisition(conn=conn, frames_per_partition=7)
            res = ctx.run_udf(dataset=aq, udf=SumSigUDF())
            assert set(shm.live_segments()) == before  # every partition's segment came back
        with ctx.make_connection("memory").open(data=data, disconnect_after=30) as conn:
            aq = ctx.make_acquisition(conn=conn, frames_per_partition=7)
            with pytest.raises(DetectorDisconnectedError):
                ctx.run_udf(dataset=aq, udf=SumSigUDF())
            assert set(shm.live_segments()) == before
    np.testing.assert_allclose(res["intensity"].data, data.sum(axis=(2, 3), dtype=np.float64))
