"""Faults of runs: a detector that stops midway, a partition that hangs, a killed process.

Each case runs a real run (threads, processes, signals) and checks what the user is
left with: an error that says what happened, results that do not pretend, nothing
left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import detflow as df
from detflow.errors import DetectorDisconnectedError
from detflow.nodes import SumSigUDF

DATA = np.random.default_rng(3).integers(1, 100, size=(6, 10, 8, 8)).astype(np.uint16)


# --- partial results ----------------------------------------------------------------------
def test_partial_results_of_frames_that_never_arrived_are_nan_and_masked() -> None:
    with df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("memory").open(data=DATA, disconnect_after=25) as conn:
        aq = ctx.make_acquisition(conn=conn, frames_per_partition=10)
        with pytest.raises(DetectorDisconnectedError) as info:
            ctx.run_udf(dataset=aq, udf=SumSigUDF())
    partial = info.value.partial_results  # type: ignore[attr-defined]
    buf = partial.buffers[0]["intensity"]
    flat = DATA.reshape(60, -1).sum(axis=1, dtype=np.float64)
    got = buf.data.reshape(-1)
    np.testing.assert_array_equal(got[:25], flat[:25])
    assert np.isnan(got[25:]).all()  # never arrived: not a sum of zero
    np.testing.assert_array_equal(buf.valid_mask.reshape(-1), np.arange(60) < 25)
    assert buf.masked_data.count() == 25


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process and everything it started (its own session), if still there."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


# --- killed runs ----------------------------------------------------------------------------
HANGS_IN_THE_SECOND_PARTITION = """
import sys, time
import numpy as np
import detflow as df
from detflow.nodes import UDF

class HangsLater(UDF):
    def get_result_buffers(self):
        return {"n": self.buffer(kind="nav", dtype="float64")}

    def process_tile(self, tile):
        if (self.meta.coordinates[:, 0] >= 2).any():  # nav rows 2-3: the second partition
            print("hanging", flush=True)
            time.sleep(600)
        self.results.n[:] = 1

data = np.random.default_rng(3).integers(1, 100, size=(4, 4, 8, 8)).astype(np.uint16)
g = df.Graph("killed")
g.source("memory", data=data)
g.partition(num_partitions=2)
g.udf(HangsLater(), id="h")
g.sink("npy", inputs=["partition"], id="raw", path=sys.argv[1])
g.run(executor="inline", overwrite=True)
"""


def test_a_killed_npy_recording_leaves_the_old_file_and_a_partial_one(tmp_path: Path) -> None:
    target = tmp_path / "frames.npy"
    old = np.arange(10, dtype=np.int32)
    np.save(target, old)
    proc = subprocess.Popen([sys.executable, "-c", HANGS_IN_THE_SECOND_PARTITION, str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    with proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = proc.stdout.readline()  # the event: the first partition is recorded, the second hangs
            assert line.strip() == "hanging", proc.stderr.read()
        finally:
            _kill_group(proc)
            proc.wait(30)
    np.testing.assert_array_equal(np.load(target), old)  # the old recording is intact
    partial = np.load(str(target) + ".partial")  # and what was recorded is there, named as partial
    assert partial.shape == (4, 4, 8, 8) and partial[:2].any()


LEAVES_A_SEGMENT = """
from detflow.executors import shm
array, name, release = shm.allocate(1000, "uint8")
print(name, flush=True)
import time; time.sleep(600)
"""


def _leaked_segment() -> str:
    """A segment whose driver was killed with its whole process group (its resource tracker too)."""
    proc = subprocess.Popen([sys.executable, "-c", LEAVES_A_SEGMENT], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    with proc:
        assert proc.stdout is not None
        name = proc.stdout.readline().strip()
        _kill_group(proc)
    assert name.startswith("detflow_") and os.path.exists(f"/dev/shm/{name}")
    return name


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory is not a folder here")
def test_a_pipelined_executor_removes_segments_of_dead_drivers() -> None:
    from detflow.executors.pipelined import PipelinedExecutor

    name = _leaked_segment()
    with contextlib.closing(PipelinedExecutor.make_local(cpus=1)):
        assert not os.path.exists(f"/dev/shm/{name}")


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory is not a folder here")
def test_detflow_doctor_lists_and_cleans_stale_segments() -> None:
    name = _leaked_segment()
    listed = subprocess.run([sys.executable, "-m", "detflow.cli", "doctor"], capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0 and f"stale: /dev/shm/{name}" in listed.stdout
    assert os.path.exists(f"/dev/shm/{name}")  # listing removes nothing
    cleaned = subprocess.run([sys.executable, "-m", "detflow.cli", "doctor", "--clean"], capture_output=True,
                             text=True, timeout=120)
    assert cleaned.returncode == 0 and f"removed: /dev/shm/{name}" in cleaned.stdout
    assert not os.path.exists(f"/dev/shm/{name}")


# --- hangs: partition_timeout and Ctrl-C --------------------------------------------------
HANG_UDF = """
import json, os, sys, time
import numpy as np
import detflow as df
from detflow.nodes import UDF

class HangsLater(UDF):
    def __init__(self, marker):
        super().__init__(marker=marker)

    def get_result_buffers(self):
        return {"n": self.buffer(kind="nav", dtype="float64")}

    def process_tile(self, tile):
        if (self.meta.coordinates[:, 0] >= 2).any():  # nav rows 2-3: the second partition
            with open(self.params.marker, "w") as f:  # the event the test waits for, from any process
                f.write("hanging")
            time.sleep(600)
        self.results.n[:] = 1
"""

RUN_HANGING = HANG_UDF + """
import signal
# A shell hands a foreground program Python's default Ctrl-C handler; a test run started in the
# background inherits SIGINT ignored, which Python then keeps. Stand in for the terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)
data = np.ones((4, 4, 8, 8), np.uint16)
name, params = sys.argv[1], json.loads(sys.argv[2])
if sys.argv[3] != "none":
    params["partition_timeout"] = float(sys.argv[3])
with df.Context.make_with(name, cpus=1, **params) as ctx:
    ctx.run_udf(dataset=ctx.load("memory", data=data, num_partitions=2), udf=HangsLater(sys.argv[4]))
"""

#: every executor and every local scheduler of the delayed one: (name, executor parameters)
EVERY_EXECUTOR = {
    "inline": ("inline", {}),
    "threads": ("threads", {}),
    "pipelined": ("pipelined", {}),
    "delayed-sync": ("delayed", {"scheduler": "sync"}),
    "delayed-threads": ("delayed", {"scheduler": "threads"}),
    "delayed-processes": ("delayed", {"scheduler": "processes"}),
    "dask": ("dask", {}),
}
#: partition_timeout per executor: the delayed processes scheduler counts from when dask hands
#: the task to its pool of processes, where unpickling it still counts
TIMEOUTS = {"delayed-processes": "5"}


def _run_hanging(executor: str, timeout: str, marker: Path) -> subprocess.Popen[str]:
    name, params = EVERY_EXECUTOR[executor]
    return subprocess.Popen([sys.executable, "-c", RUN_HANGING, name, json.dumps(params), timeout, str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(marker: Path, proc: subprocess.Popen[str], limit: float = 240) -> None:
    """Until the UDF wrote ``marker`` (it hangs from then on); fails if the run ends first."""
    deadline = time.monotonic() + limit
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before its UDF hung: {proc.communicate()}")
        assert time.monotonic() < deadline, "the UDF never started its hanging partition"
        time.sleep(0.05)


@pytest.mark.parametrize("executor", sorted(EVERY_EXECUTOR))
def test_partition_timeout_ends_a_run_naming_the_partition(executor: str, tmp_path: Path) -> None:
    timeout = TIMEOUTS.get(executor, "1.5")
    with _run_hanging(executor, timeout, tmp_path / "hanging") as proc:
        try:
            _, err = proc.communicate(timeout=240)  # the hang is 600 s: only the timeout ends it sooner
        finally:
            _kill_group(proc)
    assert (tmp_path / "hanging").exists(), err
    assert proc.returncode != 0
    assert (f"PartitionTimeoutError: partition 1 (frames 8:16) ran longer than partition_timeout="
            f"{float(timeout):g} s") in err, err


@pytest.mark.parametrize("executor", sorted(EVERY_EXECUTOR))
def test_ctrl_c_stops_a_run_whose_udf_hangs(executor: str, tmp_path: Path) -> None:
    marker = tmp_path / "hanging"
    with _run_hanging(executor, "none", marker) as proc:
        try:
            _wait_for(marker, proc)  # the event: a partition is stuck
            os.kill(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=120)  # a few seconds here; generous for a loaded machine
        finally:
            _kill_group(proc)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err


def test_partition_timeout_is_checked() -> None:
    from detflow.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="partition_timeout must be > 0 seconds; got -1"):
        df.Context.make_with("inline", partition_timeout=-1)


class _KillsItsWorker(SumSigUDF):
    """Kills its own worker process (as the OOM killer would)."""

    def process_tile(self, tile: np.ndarray) -> None:
        os._exit(9)


def test_a_dask_worker_that_dies_is_named_with_its_partition_and_node() -> None:
    import dask
    from distributed import KilledWorker

    from detflow.executors.dask_ import DaskExecutor

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):  # the first death ends the task
        ex = DaskExecutor.make_local(cpus=1)
    g = df.Graph("dies")
    g.source("memory", data=np.ones((4, 4, 8, 8), np.uint16))
    g.partition(num_partitions=1)
    g.udf(_KillsItsWorker(), id="frames")
    try:
        with pytest.raises(KilledWorker) as info:
            g.run(executor=ex)
    finally:
        ex.close()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "partition 0 (frames 0:16) of node 'frames' was on worker tcp://127.0.0.1:" in notes, notes
