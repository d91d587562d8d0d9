"""The dashboard, the recorder and the monitors on a DECTRIS stream, as on a Merlin one."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np

import detflow as df
from detflow.nodes import PartitionMonitorUDF, RecordUDF, SignalMonitorUDF, SumSigUDF
from detflow.sources.live.dectris.sim import DectrisSimulator

from .conftest import NAV


def test_the_dashboard_shows_a_dectris_acquisition(frames: np.ndarray) -> None:
    with DectrisSimulator(frames, api_port=0, data_port=0) as s:
        g = df.Graph("dectris-live")
        g.source("dectris", api_port=s.api_port, data_port=s.data_port, nav_shape=list(NAV), trigger="exte")
        g.partition(frames_per_partition=8)
        g.udf(SumSigUDF(), id="total")
        g.udf("sum", id="sum")
        from detflow.dashboard import serve

        with serve(g, port=0, show=False, threaded=True, executor="inline") as server:
            ctl = server.dashboard.controller
            assert ctl.wait(timeout=60) == "finished"
            with urllib.request.urlopen(server.url, timeout=30) as response:
                assert response.status == 200
            images = {k: v.data for k, v in ctl.snapshot().images.items()}
    np.testing.assert_array_equal(images["total/intensity"], frames.sum(axis=(1, 2), dtype=np.float64).reshape(NAV))
    np.testing.assert_array_equal(images["sum/intensity"], frames.sum(axis=0))
    np.testing.assert_array_equal(images["latest_frame/intensity"], frames[-1])


def test_the_recorder_writes_every_frame(sim: DectrisSimulator, frames: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "recorded.npy"
    with df.LiveContext.make_with("pipelined", cpus=2) as ctx, ctx.make_connection("dectris").open(
            api_port=sim.api_port, data_port=sim.data_port) as conn:
        aq = ctx.make_acquisition(conn=conn, nav_shape=NAV, frames_per_partition=10)
        ctx.run_udf(dataset=aq, udf=RecordUDF(filename=path))
    recorded = np.load(path)
    assert recorded.shape == (*NAV, 24, 32) and recorded.dtype == np.uint16
    np.testing.assert_array_equal(recorded.reshape(frames.shape), frames)


def test_the_monitors_show_the_latest_frame_and_partition(sim: DectrisSimulator, frames: np.ndarray) -> None:
    with df.LiveContext.make_with("inline") as ctx, ctx.make_connection("dectris").open(
            api_port=sim.api_port, data_port=sim.data_port) as conn:
        aq = ctx.make_acquisition(conn=conn, nav_shape=NAV, frames_per_partition=10)
        seen = []
        for part in ctx.run_udf_iter(dataset=aq, udf=[SignalMonitorUDF(), PartitionMonitorUDF()]):
            seen.append(part.frames_done)
            latest = part.buffers[0]["intensity"].data
            np.testing.assert_array_equal(latest, frames[part.frames_done - 1])
            np.testing.assert_array_equal(part.buffers[1]["intensity"].data,
                                          frames[(part.frames_done - 1) // 10 * 10 : part.frames_done].sum(axis=0))
    assert seen == [10, 20, 30, 40, 48]
