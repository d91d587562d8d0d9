"""``detflow sim asi-tpx3`` as a user runs it, and the same graph offline (``csr``) and live."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import detflow as df
from detflow.sources.csr import save_csr

from .conftest import sparse_frames


@contextmanager
def sim_process(*args: str) -> Iterator[tuple[int, list[str]]]:
    """The simulator in a subprocess on port 0; yields its port and what it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "detflow.cli", "sim", "asi-tpx3", *args, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    port = None
    try:
        assert proc.stdout is not None
        timer = threading.Timer(60, proc.kill)  # a simulator that never prints its port fails, not hangs
        timer.start()
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if m := re.match(r"data port: 127\.0\.0\.1:(\d+)$", lines[-1]):
                port = int(m.group(1))
            if line.startswith("press Ctrl-C"):
                break
        timer.cancel()
        assert port is not None, lines
        yield port, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        lines += out.splitlines() + err.splitlines()


def graph(source_type: str, **params: object) -> df.Graph:
    g = df.Graph("events")
    g.source(source_type, **params)
    g.partition(frames_per_partition=10)
    g.udf("sum", id="total")
    g.udf("sumsig", id="per_frame")
    return g


@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_the_same_graph_offline_and_live_from_the_cli_simulator(tmp_path: Path, suffix: str) -> None:
    data = sparse_frames(21, nav=(5, 9), sig=(32, 16))
    path = tmp_path / f"scan{suffix}"
    if suffix == ".npz":
        save_csr(path, data)
    else:
        np.save(path, data)
    offline = graph("csr", path=str(tmp_path / "scan.npz")) if suffix == ".npz" else None
    with sim_process(str(path), "--chunk-frames", "4", "--metadata-bytes", "1000", "--acquisitions", "2") as (
            port, lines):
        assert re.search(r"nav 5x9, sig 32x16, \d+ events, uint16, 4 frames per chunk, 2 acquisition", lines[0]), lines
        live = [graph("asi_tpx3", data_port=port, wait_timeout=30).run(executor="inline")]
        with df.LiveContext.make_with("inline") as ctx, ctx.make_connection("asi_tpx3").open(data_port=port) as conn:
            for _ in range(2):
                aq = ctx.make_acquisition(conn=conn, pending_aq=conn.wait_for_acquisition(30))
                live.append(ctx.run_udf(dataset=aq, udf=[df.nodes.SumUDF(), df.nodes.SumSigUDF()]))
    results = [(r["total"]["intensity"].data, r["per_frame"]["intensity"].data) for r in live[:1]]
    results += [(r[0]["intensity"].data, r[1]["intensity"].data) for r in live[1:]]
    if offline is not None:
        r = offline.run(executor="inline")
        results.append((r["total"]["intensity"].data, r["per_frame"]["intensity"].data))
    for total, per_frame in results:
        np.testing.assert_array_equal(total, data.sum(axis=(0, 1)))
        np.testing.assert_array_equal(per_frame, data.sum(axis=(2, 3)))


def test_cli_refuses_a_file_that_is_not_frames(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", np.zeros(10))
    proc = subprocess.run([sys.executable, "-m", "detflow.cli", "sim", "asi-tpx3", str(tmp_path / "flat.npy"),
                           "--port", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "dense frames must be 4D" in proc.stderr, proc.stderr
