"""Merlin through LiveContext, against the simulator (and hand-made servers) on real sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import detflow as df
from detflow.cli import main
from detflow.errors import DetectorDisconnectedError, DetectorProtocolError, DetectorTimeoutError
from detflow.nodes import SignalMonitorUDF, SumSigUDF, SumUDF
from detflow.sources.live.merlin.connection import SoftTriggerHooks
from detflow.sources.live.merlin.protocol import encode_message
from detflow.sources.live.merlin.sim import MerlinSimulator
from detflow.sources.mib_write import write_mib

NAV = (6, 8)


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 4096, size=(*NAV, 32, 24), dtype=np.uint16)
    path = tmp_path_factory.mktemp("merlin") / "scan.hdr"
    write_mib(path, data, counter_depth=12)
    return path, data


def sim(path: Path, **kw: Any) -> MerlinSimulator:
    return MerlinSimulator(path, data_port=0, control_port=0, **kw)


def open_conn(ctx: df.LiveContext, s: Any, *, data_port: int | None = None, timeout: float = 5.0) -> Any:
    return ctx.make_connection("merlin").open(
        api_port=s.control_port, data_port=s.data_port if data_port is None else data_port, timeout=timeout
    )


def check_sums(res: tuple[Any, ...], data: np.ndarray) -> None:
    s, ss = res[:2]
    np.testing.assert_allclose(s["intensity"].data, data.sum(axis=(0, 1), dtype=np.float64))
    np.testing.assert_allclose(ss["intensity"].data, data.sum(axis=(2, 3), dtype=np.float64))


class Recorder(SoftTriggerHooks):
    def __init__(self, nav: Any = None) -> None:
        self.calls: list[str] = []
        self.nav = nav

    def on_ready_for_data(self, env: Any) -> None:
        self.calls.append("ready")
        super().on_ready_for_data(env)

    def on_determine_nav_shape(self, env: Any) -> Any:
        self.calls.append(f"nav {env.nimages}")
        return self.nav


def test_passive_mode(lctx: df.LiveContext, scan: tuple[Path, np.ndarray]) -> None:
    path, data = scan
    with sim(path) as s, open_conn(lctx, s) as conn:
        pending = conn.wait_for_acquisition(timeout=10)
        assert pending is not None
        assert (pending.nimages, pending.nav_shape) == (48, NAV)  # from the header's ScanY/ScanX
        aq = lctx.make_acquisition(conn=conn, pending_aq=pending, frames_per_partition=10)
        assert (aq.shape.nav, aq.shape.sig, aq.dtype) == (NAV, (32, 24), np.uint16)
        res = lctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF(), SignalMonitorUDF()])
    check_sums(res, data)
    np.testing.assert_array_equal(res[2]["intensity"].data, data[-1, -1])


def test_active_mode_calls_the_hooks_in_order(scan: tuple[Path, np.ndarray]) -> None:
    path, data = scan
    hooks = Recorder(nav=NAV)
    with sim(path, wait_trigger=True) as s, df.LiveContext.make_with("threads", cpus=2) as ctx, \
            open_conn(ctx, s) as conn:
        conn.control.set("NUMFRAMESTOACQUIRE", 48)
        aq = ctx.make_acquisition(conn=conn, hooks=hooks)  # no nav_shape: the hook decides
        assert hooks.calls == ["nav 48"]  # the shape is known before the run starts
        res = ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()])
    assert hooks.calls == ["nav 48", "ready"]
    check_sums(res, data)


def test_passive_without_a_trigger_waits_and_times_out(scan: tuple[Path, np.ndarray]) -> None:
    path, _ = scan
    # the connection's own timeout is long, so a wait that ignored its 0.3 s would take a minute
    with sim(path, wait_trigger=True) as s, df.LiveContext.make_with("inline") as ctx, \
            open_conn(ctx, s, timeout=60) as conn:
        t0 = time.monotonic()
        assert conn.wait_for_acquisition(timeout=0.3) is None  # nobody armed the detector
        assert time.monotonic() - t0 < 30


@pytest.mark.parametrize(
    ("depth", "raw", "layout", "sig", "dtype"),
    [
        (6, False, "1x1", (16, 24), np.uint8),
        (24, False, "1x1", (16, 24), np.uint32),
        (12, True, "2x2G", (514, 514), np.uint16),
        (1, True, "1x1", (64, 64), np.uint8),
    ],
)
def test_frame_formats(tmp_path: Path, depth: int, raw: bool, layout: str, sig: tuple[int, int],
                       dtype: Any) -> None:
    rng = np.random.default_rng(depth)
    data = rng.integers(0, 2**depth, size=(2, 3, *sig), dtype=np.uint32).astype(dtype)
    if layout == "2x2G":  # the gap pixels are never sent
        data[..., 256:258, :] = 0
        data[..., :, 256:258] = 0
    write_mib(tmp_path / "f.hdr", data, counter_depth=depth, raw=raw, layout=layout)
    with sim(tmp_path / "f.hdr") as s, df.LiveContext.make_with("inline") as ctx, open_conn(ctx, s) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10))
        assert (aq.shape.sig, aq.dtype) == (sig, np.dtype(dtype))
        res = ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()])
    check_sums(res, data)


def test_two_acquisitions_back_to_back(scan: tuple[Path, np.ndarray]) -> None:
    path, data = scan
    with sim(path, continuous=True) as s, df.LiveContext.make_with("threads", cpus=2) as ctx, \
            open_conn(ctx, s) as conn:
        for _ in range(2):
            aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10))
            check_sums(ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()]), data)


def test_garbage_before_the_header_is_skipped(scan: tuple[Path, np.ndarray]) -> None:
    path, data = scan
    with sim(path, garbage=True) as s, df.LiveContext.make_with("inline") as ctx, open_conn(ctx, s) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10))
        check_sums(ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()]), data)


def test_control_and_frame_header_disagree(scan: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, data = scan
    write_mib(tmp_path / "other.hdr", (data[..., :16] % 64).astype(np.uint8), counter_depth=6)
    # control from one detector (32x24, 12 bit), frames from another (32x16, 6 bit)
    with sim(path) as control, sim(tmp_path / "other.hdr") as other, df.LiveContext.make_with("inline") as ctx, \
            open_conn(ctx, control, data_port=other.data_port) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10))
        assert (aq.shape.sig, aq.dtype) == ((32, 24), np.uint16)
        with pytest.raises(DetectorProtocolError, match="first frame header says 32x16 U08"):
            ctx.run_udf(dataset=aq, udf=SumUDF())


# --- a detector that fails mid-acquisition: a hand-made data server --------------------------------
def mpx_messages(path: Path) -> tuple[bytes, list[bytes]]:
    """The acquisition header message and one message per frame, as Merlin sends them."""
    hdr = path.read_bytes()
    mib = path.with_suffix(".mib").read_bytes()
    head = mib[:200].split(b",")
    header_bytes = int(head[2])
    frame_bytes = header_bytes + int(head[4]) * int(head[5]) * 2  # U16
    frames = [mib[i : i + frame_bytes] for i in range(0, len(mib), frame_bytes)]
    return encode_message(hdr), [encode_message(f) for f in frames]


class DataServer:
    """Sends the header and ``k`` frames, then closes (or goes silent) on one client."""

    def __init__(self, header: bytes, frames: list[bytes], *, close: bool) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.payload = header + b"".join(frames)
        self.close_after = close
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(10)
        conn, _ = self.listener.accept()
        with conn:
            conn.sendall(self.payload)
            if not self.close_after:
                self.done.wait(120)  # silent (until stop) far longer than any client's timeout

    def stop(self) -> None:
        self.done.set()
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def failing_server(scan: tuple[Path, np.ndarray], request: pytest.FixtureRequest) -> Iterator[DataServer]:
    header, frames = mpx_messages(scan[0])
    server = DataServer(header, frames[:29], close=request.param)
    yield server
    server.stop()


@pytest.mark.parametrize("failing_server", [True], indirect=True, ids=["disconnect"])
def test_disconnect_mid_acquisition_keeps_partial_results(
    failing_server: DataServer, scan: tuple[Path, np.ndarray], executor: Any, tmp_path: Path
) -> None:
    path, data = scan
    store = tmp_path / "partial.zarr"
    with sim(path, wait_trigger=True) as s, df.LiveContext(executor).make_connection("merlin").open(
        api_port=s.control_port, data_port=failing_server.port, timeout=5
    ) as conn:
        g = df.Graph("live")
        g.source(conn.make_acquisition(pending_aq=conn.wait_for_acquisition(10)))
        g.partition(frames_per_partition=10)
        g.udf(SumSigUDF(), id="sumsig")
        g.sink("zarr", inputs=["sumsig"], path=str(store))
        with pytest.raises(DetectorDisconnectedError, match="29 of 48 frames") as info:
            g.run(executor=executor)
    assert info.value.frames_received == 29
    root = zarr.open_group(str(store), mode="r")
    assert root.attrs["complete"] is False
    valid = np.asarray(root["valid"]).reshape(-1)
    assert valid[:29].all() and not valid[29:].any()
    expected = data.reshape(48, -1).sum(axis=1, dtype=np.float64)[:29]
    np.testing.assert_allclose(np.asarray(root["intensity"]).reshape(-1)[:29], expected)


@pytest.mark.parametrize("failing_server", [False], indirect=True, ids=["silent"])
def test_silent_detector_times_out(failing_server: DataServer, scan: tuple[Path, np.ndarray]) -> None:
    with sim(scan[0], wait_trigger=True) as s, df.LiveContext.make_with("inline") as ctx, open_conn(
        ctx, s, data_port=failing_server.port, timeout=0.5
    ) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10), frames_per_partition=10)
        t0 = time.monotonic()
        with pytest.raises(DetectorTimeoutError, match="29 of 48") as info:
            ctx.run_udf(dataset=aq, udf=SumUDF())
        assert time.monotonic() - t0 < 60  # bounded: the 0.5 s timeout, not the server's silence
    assert info.value.frames_received == 29
    assert info.value.partial_results.frames_done == 29


# --- a graph file with a merlin source, through `detflow run` --------------------------------------
def test_graph_file_runs_live(scan: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, data = scan
    with sim(path, continuous=True) as s:
        graph = tmp_path / "live.yaml"
        graph.write_text(f"""\
schema_version: 1
name: live-sum
source: {{type: merlin, params: {{data_port: {s.data_port}, api_port: {s.control_port}, wait_timeout: 10}}}}
partition: {{frames_per_partition: 16}}
nodes:
  total: {{type: sumsig}}
  frame: {{type: sum}}
sinks:
  out: {{type: zarr, inputs: [total, frame], params: {{path: "{{output_dir}}/live.zarr"}}}}
""")
        result = CliRunner().invoke(main, ["run", str(graph), "--executor", "threads", "--output-dir",
                                           str(tmp_path), "--no-progress"])
        assert result.exit_code == 0, result.output
    root = zarr.open_group(str(tmp_path / "live.zarr"), mode="r")
    assert root.attrs["complete"] is True
    np.testing.assert_allclose(np.asarray(root["total_intensity"]), data.sum(axis=(2, 3)))
    np.testing.assert_allclose(np.asarray(root["frame_intensity"]), data.sum(axis=(0, 1)))


def test_an_abandoned_run_leaves_the_connection_ready_for_the_next(scan: tuple[Path, np.ndarray]) -> None:
    path, data = scan
    with sim(path, continuous=True, frame_rate=2000) as s, df.LiveContext.make_with("threads", cpus=2) as ctx, \
            open_conn(ctx, s) as conn:
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10), frames_per_partition=4)
        it = ctx.run_udf_iter(dataset=aq, udf=SumUDF())
        assert next(it).frames_done < 48
        it.close()  # stop watching mid-acquisition: the data port is reconnected for a clean start
        aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(10))
        check_sums(ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()]), data)


def test_graph_with_a_scan_shape_validates_without_taking_an_acquisition(
    scan: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, data = scan
    with sim(path) as s:  # untriggered: every connection that reads gets an acquisition
        graph = tmp_path / "live.yaml"
        graph.write_text(f"""\
schema_version: 1
name: live-shape
source: {{type: merlin, params: {{data_port: {s.data_port}, api_port: {s.control_port}, nav_shape: [6, 8],
                                  wait_timeout: 60}}}}
partition: {{frames_per_partition: 16}}
nodes:
  frame: {{type: sum}}
""")
        t0 = time.monotonic()
        checked = CliRunner().invoke(main, ["validate", str(graph)])
        assert checked.exit_code == 0, checked.output
        assert "nav (6, 8) sig (32, 24) uint16" in checked.output
        assert time.monotonic() - t0 < 30  # no waiting for an acquisition (that would wait up to 60 s)
        res = df.Graph.from_yaml(graph).run(executor="threads")
    np.testing.assert_allclose(res["frame"]["intensity"].values, data.sum(axis=(0, 1)))
