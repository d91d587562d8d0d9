"""DECTRIS through LiveContext, against the simulator on real sockets; results against numpy."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import zarr

import detflow as df
from detflow.errors import DetectorProtocolError, DetectorTimeoutError
from detflow.nodes import SignalMonitorUDF, SumSigUDF, SumUDF
from detflow.sources.live.base import Hooks
from detflow.sources.live.dectris.acquisition import TriggerHooks
from detflow.sources.live.dectris.control import SimplonClient
from detflow.sources.live.dectris.sim import DectrisSimulator

from .conftest import NAV, random_frames


def open_conn(ctx: df.LiveContext, s: DectrisSimulator, timeout: float = 10.0) -> Any:
    return ctx.make_connection("dectris").open(api_port=s.api_port, data_port=s.data_port, timeout=timeout)


def check(res: Any, frames: np.ndarray, nav: tuple[int, ...] = NAV) -> None:
    s, ss = res[:2]
    np.testing.assert_array_equal(s["intensity"].data, frames.sum(axis=0, dtype=np.float64))
    np.testing.assert_array_equal(ss["intensity"].data, frames.sum(axis=(1, 2), dtype=np.float64).reshape(nav))


def test_passive_mode(lctx: df.LiveContext, sim: DectrisSimulator, frames: np.ndarray) -> None:
    with open_conn(lctx, sim) as conn:
        assert conn.wait_for_acquisition(timeout=0.2) is None  # nobody armed yet
        series = SimplonClient("127.0.0.1", sim.api_port).arm()  # someone else arms
        pending = conn.wait_for_acquisition(timeout=10)
        assert pending is not None and pending.nimages == 48 and pending.handle.series == series
        assert pending.detector_config["trigger_mode"] == "exte"
        aq = lctx.make_acquisition(conn=conn, pending_aq=pending, nav_shape=NAV, frames_per_partition=10)
        assert (aq.shape.nav, aq.shape.sig, aq.dtype, aq.mode) == (NAV, (24, 32), np.uint16, "passive")
        res = lctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF(), SignalMonitorUDF()])
    check(res, frames)
    np.testing.assert_array_equal(res[2]["intensity"].data, frames[-1])


class Recorder(Hooks):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_ready_for_data(self, env: Any) -> None:
        self.calls.append(f"ready, armed series {env.aq.series}")

    def on_determine_nav_shape(self, env: Any) -> Any:
        self.calls.append(f"nav {env.nimages}")
        return None


def test_the_nav_shape_hook_gets_the_configured_count(sim: DectrisSimulator) -> None:
    hooks = Recorder()
    with df.LiveContext.make_with("inline") as ctx, open_conn(ctx, sim) as conn, \
            pytest.raises(ValueError, match="48 frames, not a square number"):
        ctx.make_acquisition(conn=conn, hooks=hooks)  # no nav_shape, and the hook gives none
    assert hooks.calls == ["nav 48"]


def test_active_mode_runs_and_leaves_the_detector_idle(sim: DectrisSimulator, frames: np.ndarray) -> None:
    hooks = Recorder()
    with df.LiveContext.make_with("pipelined", cpus=2) as ctx, open_conn(ctx, sim) as conn:
        aq = ctx.make_acquisition(conn=conn, nav_shape=(-1, 8), hooks=hooks, frames_per_partition=7)
        assert aq.shape.nav == NAV
        check(ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()]), frames)
        assert conn.api.get_status("state") == "idle"
        # the same connection takes the next series
        check(ctx.run_udf(dataset=ctx.make_acquisition(conn=conn, nav_shape=NAV), udf=[SumUDF(), SumSigUDF()]),
              frames)
    assert hooks.calls == ["nav 48", f"ready, armed series {aq.series}"]  # once armed, before reading


@pytest.mark.parametrize("encoding", ["bs{}-lz4<", "lz4<", "<"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32], ids=lambda d: np.dtype(d).name)
def test_every_encoding_and_dtype(dtype: type, encoding: str) -> None:
    frames = random_frames(9, 20, dtype, (17, 23))  # 391 pixels: a short last block and a raw tail
    enc = encoding.format(np.dtype(dtype).itemsize * 8)
    with DectrisSimulator(frames, api_port=0, data_port=0, encoding=enc) as s, \
            df.LiveContext.make_with("inline") as ctx, open_conn(ctx, s) as conn:
        aq = ctx.make_acquisition(conn=conn, nav_shape=(4, 5), frames_per_partition=6)
        assert aq.dtype == dtype
        res = ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()])
        assert conn.stream.encoding == enc
    check(res, frames, (4, 5))


@pytest.mark.parametrize("mode", ["exte", "inte", "exts", "ints"])
def test_each_trigger_mode(sim: DectrisSimulator, frames: np.ndarray, mode: str) -> None:
    with df.LiveContext.make_with("threads", cpus=2) as ctx, open_conn(ctx, sim) as conn:
        try:
            aq = ctx.make_acquisition(conn=conn, nav_shape=(4, 6), hooks=TriggerHooks(),
                                      controller=conn.get_active_controller(mode))
            res = ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()])
            assert conn.api.get_config("trigger_mode") == mode
        finally:
            conn.get_active_controller("exte").apply(conn.api, 48)
    check(res, frames[:24], (4, 6))


def test_without_a_trigger_an_internal_series_times_out(sim: DectrisSimulator) -> None:
    with df.LiveContext.make_with("inline") as ctx, open_conn(ctx, sim, timeout=0.5) as conn:
        try:
            aq = ctx.make_acquisition(conn=conn, nav_shape=(4, 6), controller=conn.get_active_controller("ints"))
            t0 = time.monotonic()
            with pytest.raises(DetectorTimeoutError, match="waiting for image 0 of series"):
                ctx.run_udf(dataset=aq, udf=SumUDF())
            assert time.monotonic() - t0 < 10
            assert conn.api.get_status("state") == "idle"  # disarmed after the failure
        finally:
            conn.get_active_controller("exte").apply(conn.api, 48)


def test_a_scan_that_does_not_match_the_configured_count(sim: DectrisSimulator) -> None:
    with df.LiveContext.make_with("inline") as ctx, open_conn(ctx, sim) as conn, \
            pytest.raises(ValueError, match="holds 24 frames, but the detector will send 48"):
        ctx.make_acquisition(conn=conn, nav_shape=(4, 6))


def test_a_detector_that_stops_mid_series_keeps_the_partial_results(executor: Any, frames: np.ndarray,
                                                                    tmp_path: Any) -> None:
    store = tmp_path / "partial.zarr"
    with DectrisSimulator(frames, api_port=0, data_port=0, stop_after=29) as s, \
            df.LiveContext(executor).make_connection("dectris").open(api_port=s.api_port, data_port=s.data_port,
                                                                     timeout=0.5) as conn:
        g = df.Graph("live")
        g.source(conn.make_acquisition(nav_shape=NAV))
        g.partition(frames_per_partition=10)
        g.udf(SumSigUDF(), id="sumsig")
        g.sink("zarr", inputs=["sumsig"], path=str(store))
        with pytest.raises(DetectorTimeoutError, match="29 of 48") as info:
            g.run(executor=executor)
    assert info.value.frames_received == 29
    root = zarr.open_group(str(store), mode="r")
    assert root.attrs["complete"] is False
    valid = np.asarray(root["valid"]).reshape(-1)
    assert valid[:29].all() and not valid[29:].any()
    np.testing.assert_array_equal(np.asarray(root["intensity"]).reshape(-1)[:29],
                                  frames.sum(axis=(1, 2), dtype=np.float64)[:29])


def test_ids_that_jump_end_the_run_and_keep_what_came_before(frames: np.ndarray) -> None:
    with DectrisSimulator(frames, api_port=0, data_port=0, frame_jump=(13, 2)) as s, \
            df.LiveContext.make_with("inline") as ctx, open_conn(ctx, s) as conn:
        aq = ctx.make_acquisition(conn=conn, nav_shape=NAV, frames_per_partition=5)
        with pytest.raises(DetectorProtocolError, match="expected image 13 of series 1; got image 15") as info:
            ctx.run_udf(dataset=aq, udf=SumUDF())
        partial = info.value.partial_results
        assert partial.frames_done == 13
        np.testing.assert_array_equal(partial[0]["intensity"].data, frames[:13].sum(axis=0, dtype=np.float64))


def test_garbage_before_the_header_is_skipped(frames: np.ndarray) -> None:
    with DectrisSimulator(frames, api_port=0, data_port=0, garbage=True) as s, \
            df.LiveContext.make_with("inline") as ctx, open_conn(ctx, s) as conn:
        check(ctx.run_udf(dataset=ctx.make_acquisition(conn=conn, nav_shape=NAV), udf=[SumUDF(), SumSigUDF()]),
              frames)
        assert conn.stream.skipped_parts == 3


class TriggerThenDisarm(Hooks):
    """Triggers ``n`` images of an ``inte`` series, then disarms: the detector ends it early."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_ready_for_data(self, env: Any) -> None:
        api = env.aq.conn.api
        for _ in range(self.n):
            api.trigger()
        api.disarm()  # after the images of those triggers, the footer


def test_a_series_disarmed_midway_ends_the_run_with_the_count(sim: DectrisSimulator, frames: np.ndarray) -> None:
    with df.LiveContext.make_with("inline") as ctx, open_conn(ctx, sim) as conn:
        try:
            aq = ctx.make_acquisition(conn=conn, nav_shape=(4, 6), frames_per_partition=4,
                                      hooks=TriggerThenDisarm(10), controller=conn.get_active_controller("inte"))
            with pytest.raises(df.errors.DetectorError, match="ended the acquisition after 10 of 24 frames") as info:
                ctx.run_udf(dataset=aq, udf=SumUDF())
            assert info.value.partial_results.frames_done == 10
            np.testing.assert_array_equal(info.value.partial_results[0]["intensity"].data,
                                          frames[:10].sum(axis=0, dtype=np.float64))
        finally:
            conn.get_active_controller("exte").apply(conn.api, 48)


def test_the_default_live_context_gives_each_core_a_decoding_worker(sim: DectrisSimulator,
                                                                      frames: np.ndarray) -> None:
    """The workers decode DECTRIS frames, so ``LiveContext()`` starts one per core at the first DECTRIS
    acquisition; for raw frames (the memory connection) it leaves a core to the receiving process."""
    from detflow.executors.base import default_cpus
    from detflow.executors.pipelined import PipelinedExecutor

    with df.LiveContext() as ctx, open_conn(ctx, sim) as conn:
        assert "started at the first acquisition" in repr(ctx)
        aq = ctx.make_acquisition(conn=conn, nav_shape=NAV)
        assert isinstance(ctx.executor, PipelinedExecutor) and ctx.executor.n_workers == default_cpus()
        check(ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()]), frames)
    with df.LiveContext.make_with() as ctx:
        with ctx.make_connection("memory").open(data=frames.reshape(*NAV, *frames.shape[1:])) as mem:
            ctx.make_acquisition(conn=mem, nav_shape=NAV)
        assert isinstance(ctx.executor, PipelinedExecutor) and ctx.executor.n_workers == max(1, default_cpus() - 1)
