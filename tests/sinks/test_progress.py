"""Every progress display counts the same thing: frames merged, in the ROI only."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np

import detflow as df
from detflow.dashboard.controller import RunController
from detflow.graph import Graph
from detflow.nodes import SumSigUDF


def _last_count(text: str) -> tuple[int, int]:
    counts = re.findall(r"(\d+)/(\d+) \[", text)  # tqdm: "... 37/37 [00:00<00:00, ...]"
    assert counts, text
    done, total = counts[-1]
    return int(done), int(total)


def test_run_udf_detflow_run_and_the_dashboard_count_the_same_frames(tmp_path, capsys) -> None:
    rng = np.random.default_rng(5)
    data = rng.integers(0, 100, size=(9, 11, 6, 6)).astype(np.uint16)
    roi = rng.random((9, 11)) < 0.4
    n_roi = int(roi.sum())
    assert 0 < n_roi < roi.size
    np.save(tmp_path / "scan.npy", data)
    np.save(tmp_path / "roi.npy", roi)
    (tmp_path / "g.yaml").write_text(
        "schema_version: 1\nname: progress\nsource: {type: npy, params: {path: scan.npy}}\n"
        "partition: {frames_per_partition: 7, roi: roi.npy}\nnodes:\n  total: {type: sumsig}\n")

    with df.Context.make_with("inline") as ctx:
        ds = ctx.load("npy", path=tmp_path / "scan.npy", frames_per_partition=7)
        ctx.run_udf(dataset=ds, udf=SumSigUDF(), roi=roi, progress=True)
    assert _last_count(capsys.readouterr().err) == (n_roi, n_roi)

    proc = subprocess.run([sys.executable, "-m", "detflow.cli", "run", str(tmp_path / "g.yaml"), "--executor",
                           "inline", "--progress"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert _last_count(proc.stderr) == (n_roi, n_roi)

    ctl = RunController(Graph.from_yaml(tmp_path / "g.yaml"), executor="inline")
    assert ctl.snapshot().frames_total == n_roi  # known before the run starts
    ctl.start()
    assert ctl.wait(timeout=60) == "finished"
    snap = ctl.snapshot()
    assert (snap.frames_done, snap.frames_total) == (n_roi, n_roi)
