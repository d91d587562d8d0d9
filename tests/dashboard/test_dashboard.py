"""The dashboard without a browser: the shared run, stopping, re-runs, the server, the command.

(``test_dashboard_browser.py`` looks at the page in headless Chromium.)
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from detflow.cli import main
from detflow.dashboard.controller import RunController, add_monitor
from detflow.dashboard.server import Dashboard
from detflow.demo import make_scan
from detflow.errors import GraphValidationError
from tests.sinks.slow import Gate, scan, slow_graph

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "graphs"


def wait_for(predicate, timeout: float = 30.0, what: str = "the condition"):
    """Poll ``predicate`` until it is truthy; fail (not hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def test_the_run_shows_the_final_values_of_every_image() -> None:
    data = scan()
    ctl = RunController(slow_graph(data, delay=0.0), executor="inline")
    assert [c.title for c in ctl.channels] == ["latest frame", "sum frame", "slow: intensity"]
    assert ctl.snapshot().status == "idle" and ctl.snapshot().frames_total == 256
    assert ctl.start()
    assert ctl.wait(timeout=60) == "finished"
    snap = ctl.snapshot()
    assert (snap.frames_done, snap.partitions_done, snap.partitions_total) == (256, 32, 32)
    images = {k: v.data for k, v in snap.images.items()}
    np.testing.assert_array_equal(images["slow/intensity"], data.sum(axis=(2, 3), dtype=np.float64))
    np.testing.assert_array_equal(images["sum/intensity"], data.sum(axis=(0, 1)))
    np.testing.assert_array_equal(images["latest_frame/intensity"], data[-1, -1])  # inline: in order
    assert all(v.final for v in snap.images.values())
    assert ctl.results is not None and ctl.results.finished


def test_a_monitor_is_added_only_when_the_graph_has_none() -> None:
    g = slow_graph(scan())
    assert [n.id for n in add_monitor(g).udf_nodes()] == ["slow", "sum", "latest_frame"]
    g.udf("signal_monitor", id="mine")
    assert add_monitor(g) is g
    assert [c.title for c in RunController(g, monitor=False).channels][0] == "latest frame"


def _zarr_graph(data, tmp_path, delay, **held):
    g = slow_graph(data, delay=delay, **held)
    g.sink("zarr", inputs=["slow"], path=str(tmp_path / "out.zarr"))
    return g


def _check_partial_store(path: Path, data: np.ndarray) -> None:
    group = zarr.open_group(path, mode="r")
    assert group.attrs["complete"] is False
    done = group.attrs["partitions_done"]
    assert 0 < len(done) < group.attrs["partitions_total"]
    valid = group["valid"][...]
    assert valid.sum() == 8 * len(done)
    np.testing.assert_array_equal(group["intensity"][...][valid], data.sum(axis=(2, 3))[valid])


def test_stop_ends_the_run_between_partitions_and_leaves_the_store_consistent(tmp_path) -> None:
    data = scan()
    gate = Gate()  # partitions 2.. wait for it: the run is going when Stop comes, however fast the machine
    ctl = RunController(_zarr_graph(data, tmp_path, 0.0, gate=gate, hold_from=2), executor="inline")
    ctl.start()
    wait_for(lambda: ctl.frames_done >= 16, what="two partitions")
    assert not ctl.start()  # one run at a time
    gate.open_when(lambda: ctl.status == "stopping")  # let the held partition end once Stop is asked
    assert ctl.stop(timeout=60) == "stopped"
    assert not ctl.running
    snap = ctl.snapshot()
    assert 16 <= snap.frames_done < 256 and ctl.results is None
    _check_partial_store(tmp_path / "out.zarr", data)


def test_rerun_replaces_the_outputs_of_the_earlier_run(tmp_path) -> None:
    data = scan()
    ctl = RunController(_zarr_graph(data, tmp_path, 0.0), executor="inline")
    ctl.start()
    assert ctl.wait(timeout=60) == "finished"
    # spoil the first run's store: a rerun that did not rewrite it would leave it spoiled
    spoiled = zarr.open_group(tmp_path / "out.zarr", mode="r+")
    spoiled["intensity"][...] = -1
    spoiled.attrs["complete"] = False
    ctl.rerun()  # not running: starts at once
    assert ctl.wait(timeout=60) == "finished" and ctl.snapshot().run_id == 2
    group = zarr.open_group(tmp_path / "out.zarr", mode="r")
    assert group.attrs["complete"] is True
    np.testing.assert_array_equal(group["intensity"][...], data.sum(axis=(2, 3)))


def test_rerun_while_running_stops_then_starts_again() -> None:
    data = scan()
    gate = Gate()
    ctl = RunController(slow_graph(data, delay=0.0, gate=gate, hold_from=1), executor="inline")
    ctl.start()
    wait_for(lambda: ctl.frames_done > 0, what="the first partition")
    ctl.rerun()  # the first run is held in partition 1: still going
    assert ctl.status == "stopping"
    gate.open()
    wait_for(lambda: ctl.snapshot().run_id == 2, what="the second run")
    assert ctl.wait(timeout=60) == "finished"
    snap = ctl.snapshot()
    assert snap.run_id == 2 and snap.frames_done == 256


def test_a_failing_run_reports_its_error() -> None:
    g = slow_graph(scan(), delay=0.0)
    g.udf("auto", id="bad", f=lambda frame: 1 / 0 if frame.max() > 1 else 0)  # passes the probe, not the data
    ctl = RunController(g, executor="inline")
    ctl.start()
    assert ctl.wait(timeout=60) == "failed"
    assert "ZeroDivisionError" in (ctl.snapshot().error or "")


def test_a_graph_that_cannot_run_fails_before_anything_is_served() -> None:
    g = slow_graph(scan())
    g.udf("com", id="com", r=-3.0)
    with pytest.raises(GraphValidationError, match="node 'com'"):
        Dashboard(g)


def test_stopping_the_server_stops_the_run_and_leaves_the_sinks_consistent(tmp_path) -> None:
    data = scan()
    gate = Gate()
    dashboard = Dashboard(_zarr_graph(data, tmp_path, 0.0, gate=gate, hold_from=2), executor="inline")
    server = dashboard.serve(port=0, show=False, threaded=True)
    try:
        with urllib.request.urlopen(server.url, timeout=30) as response:
            assert response.status == 200 and b"detflow: slow" in response.read()
        wait_for(lambda: dashboard.controller.frames_done >= 16, what="two partitions")
    finally:
        gate.open_when(lambda: dashboard.controller.status != "running")  # stopping (or failed): let it end
        server.stop(timeout=60)
    assert dashboard.controller.status == "stopped"
    _check_partial_store(tmp_path / "out.zarr", data)


def test_serve_in_a_thread() -> None:
    data = scan((4, 4, 8, 8))
    from detflow.dashboard import serve

    with serve(slow_graph(data, delay=0.0), port=0, show=False, threaded=True, executor="inline") as server:
        ctl = server.dashboard.controller
        assert ctl.wait(timeout=60) == "finished"
        with urllib.request.urlopen(server.url, timeout=30) as response:
            assert response.status == 200
        np.testing.assert_array_equal(ctl.snapshot().images["sum/intensity"].data, data.sum(axis=(0, 1)))


# --- the command --------------------------------------------------------------------------
def test_serve_help_lists_its_options() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--address", "--set", "--config", "--input", "--executor", "--no-show",
                   "--no-autostart", "--max-rate"):
        assert option in result.output


def test_serve_with_a_bad_graph_file_says_so_without_serving(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nname: bad\nsource: {type: npy, params: {path: scan.npy}}\n"
                   "partition: {}\nnodes:\n  com: {type: com, params: {r: -5}}\n")
    np.save(tmp_path / "scan.npy", np.zeros((2, 2, 8, 8), dtype=np.uint16))
    result = CliRunner().invoke(main, ["serve", str(bad), "--no-show", "--port", "0"])
    assert result.exit_code == 2
    assert "bad.yaml:6: node 'com' (com), parameter 'r'" in result.output
    assert "serving" not in result.output
    result = CliRunner().invoke(main, ["serve", str(bad), "--set", "nope.r=3", "--no-show"])
    assert result.exit_code == 2 and "no node 'nope'" in result.output


def _lines(stream) -> tuple[queue.Queue, threading.Thread]:
    """Lines of ``stream`` as they come (``None`` at the end), read by a thread."""
    q: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line)
        q.put(None)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return q, thread


@pytest.mark.slow
def test_detflow_serve_runs_the_graph_and_stops_on_ctrl_c(tmp_path) -> None:
    data, _ = make_scan()
    np.save(tmp_path / "scan.npy", data)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reader = None
    proc = subprocess.Popen(
        [sys.executable, "-m", "detflow.cli", "serve", str(EXAMPLES / "bright-field.yaml"), "--input",
         str(tmp_path / "scan.npy"), "--output-dir", str(tmp_path), "--port", "0", "--no-show",
         "--set", "com.r=18", "--executor", "inline"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines, reader = _lines(proc.stdout)
        url = None
        # bounds from the start of the process, for a machine several times slower than a quiet one
        # (starting Panel alone takes seconds)
        deadline = time.monotonic() + 180
        while url is None and time.monotonic() < deadline:
            line = lines.get(timeout=180)
            assert line is not None, "detflow serve exited before serving"
            if "serving" in line:
                url = line.split(" at ")[1].split()[0]
        assert url is not None and url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=30) as response:
            assert b"detflow: bright-field" in response.read()
        store = tmp_path / "scan.zarr"
        wait_for(lambda: (store / "zarr.json").exists() and zarr.open_group(store, mode="r").attrs["complete"],
                 timeout=120, what="the run to complete")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        rest = []
        while (line := lines.get(timeout=10)) is not None:
            rest.append(line)
        assert "the run is finished" in "".join(rest)
        group = zarr.open_group(store, mode="r")
        assert group["com_raw_com"].attrs["params"]["r"] == 18.0  # --set reached the run
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if reader is not None:
            reader.join(timeout=10)
        proc.stdout.close()
