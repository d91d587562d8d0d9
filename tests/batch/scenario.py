"""A batch scenario on generated data, shared by the CLI, crash and cluster tests.

``make_scenario`` writes N small scans (each different) and a graph file with three
outputs per input (a zarr store of ``sum`` and the gate UDF, a ``save_results`` store of
``sumsig``, a ``.npy`` recording of the frames), so every kind of output and its
completion marker is exercised. ``check_outputs`` compares every output with numpy;
``check_done_once`` reads the queue and the task logs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from detflow.sinks.npy import NpyRecorderSink
from detflow.sinks.zarr_ import ZarrSink

REPO = Path(__file__).resolve().parents[2]

GRAPH = """schema_version: 1
name: gated
source: {{type: npy, params: {{path: unused.npy}}}}
partition: {{num_partitions: 1}}
nodes:
  sum: {{type: sum}}
  gate: {{type: "tests.batch.gate_udf:GateUDF", params: {{gate: "{gate}", min_frames: {min_frames}}}}}
  totals: {{type: sumsig, save_results: true}}
sinks:
  results: {{type: zarr, inputs: [sum, gate], params: {{path: "{{output_dir}}/{{input_stem}}.zarr"}}}}
  frames: {{type: npy, inputs: [partition], params: {{path: "{{output_dir}}/{{input_stem}}-frames.npy"}}}}
"""


@dataclass
class Scenario:
    root: Path
    graph: Path
    gate: Path
    inputs: list[Path]
    out: Path
    queue: Path

    def args(self, *extra: str, workers: int = 2, visibility_timeout: float = 60) -> list[str]:
        return ["batch", str(self.graph), "--inputs", str(self.root / "data" / "**" / "*.npy"),
                "--queue", str(self.queue), "--output-dir", str(self.out), "--workers", str(workers),
                "--visibility-timeout", str(visibility_timeout), "--no-progress", *extra]

    def open_gate(self) -> None:
        (self.gate / "go").write_text("")

    def started(self) -> list[int]:
        """Process ids of the tasks that reached the gate so far."""
        return [int(p.read_text()) for p in self.gate.glob("started-*") if p.read_text()]

    def outputs(self, inp: Path) -> list[Path]:
        stem = inp.stem
        return [self.out / f"{stem}.zarr", self.out / f"{stem}_totals.zarr", self.out / f"{stem}-frames.npy"]


def make_scenario(root: Path, n_inputs: int = 4, *, min_frames: int = 0, short: int | None = None) -> Scenario:
    gate = root / "gate"
    gate.mkdir()
    inputs = []
    rng = np.random.default_rng(7)
    for i in range(n_inputs):
        folder = root / "data" / f"day{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        nav = (2, 2) if i == short else (3, 4)
        path = folder / f"scan{i}.npy"
        np.save(path, rng.integers(0, 1000, size=(*nav, 8, 8)).astype(np.uint16))
        inputs.append(path)
    graph = root / "gated.yaml"
    graph.write_text(GRAPH.format(gate=gate, min_frames=min_frames))
    return Scenario(root, graph, gate, inputs, root / "out", root / "runs.db")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def detflow(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "detflow.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env())


class Launcher:
    """``detflow batch`` running in the background, its output going to files (no pipe to fill)."""

    _n = 0

    def __init__(self, folder: Path, *args: str) -> None:
        Launcher._n += 1
        self.out_path = folder / f"launcher{Launcher._n}.out"
        self.err_path = folder / f"launcher{Launcher._n}.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "detflow.cli", *args], cwd=REPO, env=env(),
                                         stdout=out, stderr=err, start_new_session=True)
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float = 300) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout)
        return rc, self.out_path.read_text(), self.err_path.read_text()


def start(s: Scenario, *args: str) -> Launcher:
    return Launcher(s.root, *args)


def wait_until(condition, what: str, timeout: float = 180.0, procs: tuple[Launcher, ...] = ()) -> None:
    """Poll ``condition`` (an event in files or the queue); fail after a generous bound."""
    deadline = time.monotonic() + timeout
    while not condition():
        for p in procs:
            if p.poll() is not None:
                rc, out, err = p.wait()
                raise AssertionError(f"a launcher exited ({rc}) while waiting for {what}:\n{err}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def check_no_half_written(s: Scenario) -> int:
    """Every final output that exists is complete; returns how many exist."""
    n = 0
    for inp in s.inputs:
        for path in s.outputs(inp):
            if path.exists():
                n += 1
                check = ZarrSink.is_complete if path.suffix == ".zarr" else NpyRecorderSink.is_complete
                assert check(path), f"{path} exists but is not complete"
    return n


def check_outputs(s: Scenario) -> None:
    for inp in s.inputs:
        data = np.load(inp)
        results, totals, frames = s.outputs(inp)
        ds = xr.open_zarr(results)
        assert ds.attrs["complete"] is True
        np.testing.assert_array_equal(ds["sum_intensity"].values, data.astype(np.float64).sum(axis=(0, 1)))
        np.testing.assert_array_equal(ds["gate_frames"].values, np.ones(data.shape[:2]))
        np.testing.assert_array_equal(xr.open_zarr(totals)["intensity"].values, data.sum(axis=(2, 3)))
        np.testing.assert_array_equal(np.load(frames), data)


def check_done_once(s: Scenario) -> dict[str, list]:
    """Every task done, with exactly one attempt that completed, and one 'done' line in its log."""
    from detflow.batch import SQLiteQueue

    q = SQLiteQueue(s.queue, create=False)
    try:
        tasks = q.tasks()
        attempts = {t.id: q.get(t.id).attempts for t in tasks}
    finally:
        q.close()
    assert len(tasks) == len(s.inputs)
    assert {t.state for t in tasks} == {"done"}
    for tid, att in attempts.items():
        assert [a.outcome for a in att].count("done") == 1, (tid, att)
    for inp in s.inputs:
        log = (s.out / f"{inp.stem}.gated.log").read_text()
        assert log.count(" done: 3 output(s)") == 1, log
    return attempts
