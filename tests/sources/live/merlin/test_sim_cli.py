"""``detflow sim merlin`` as a user runs it: a subprocess on port 0, stopped with Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from detflow.sources.live.merlin.control import MerlinControl
from detflow.sources.live.merlin.data import MerlinDataStream

from .conftest import Recording


@contextmanager
def sim_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, int], list[str]]]:
    """The simulator in a subprocess; yields it, its ports, and the lines it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "detflow.cli", "sim", "merlin", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ports: dict[str, int] = {}
    try:
        assert proc.stdout is not None
        timer = threading.Timer(60, proc.kill)  # a simulator that never prints its ports fails, not hangs
        timer.start()
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if m := re.match(r"(data|control|trigger) port: 127\.0\.0\.1:(\d+)$", lines[-1]):
                ports[m.group(1)] = int(m.group(2))
            if line.startswith("press Ctrl-C"):
                break
        timer.cancel()
        assert "data" in ports and "control" in ports, lines
        yield proc, ports, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        lines += out.splitlines()
        lines += err.splitlines()


def test_cli_serves_on_free_ports_and_stops_on_ctrl_c(recording: Recording) -> None:
    with sim_process(str(recording.hdr), "--data-port", "0", "--control-port", "0", "--trigger-port", "0",
                     "--wait-trigger") as (proc, ports, lines):
        assert "trigger" in ports
        assert re.search(r"20 frames of 64x64 U16 \(1x1\)\), wait-trigger", lines[0]), lines
        with MerlinDataStream("127.0.0.1", ports["data"], timeout=10) as stream, \
                MerlinControl("127.0.0.1", ports["control"], timeout=10) as ctl:
            assert ctl.get("IMAGEX") == "64"
            ctl.cmd("STARTACQUISITION")
            assert stream.read_acquisition_header().scan_shape == (4, 5)
            ctl.cmd("SOFTTRIGGER")
            out = np.zeros((20, 64, 64), np.uint16)
            assert stream.read_frames(out) == 20
        np.testing.assert_array_equal(out, recording.frames)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert "merlin simulator: stopped" in lines
    # the replay's progress bar, on stderr: the acquisition and its frames sent
    assert any("acquisition 1" in line and "20/20" in line for line in lines), lines


def test_cli_error_for_a_missing_file(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "detflow.cli", "sim", "merlin", str(tmp_path / "nope.hdr")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_cli_error_for_a_port_in_use(recording: Recording) -> None:
    with sim_process(str(recording.hdr), "--data-port", "0", "--control-port", "0") as (_, ports, _lines):
        proc = subprocess.run([sys.executable, "-m", "detflow.cli", "sim", "merlin", str(recording.hdr),
                               "--data-port", str(ports["data"]), "--control-port", "0"],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen on 127.0.0.1:{ports['data']}" in proc.stderr
