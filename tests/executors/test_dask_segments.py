"""The dask executor's shared-memory hand-off: a segment lives until no task that reads it can run.

An abandoned run (its consumer stopped, or one of its tasks failed) still has tasks on
the workers; ``Future.cancel()`` returns before a worker that started one has stopped.
If the driver freed their segments then, such a task would read a segment that was
unlinked ("is gone") or, worse, one that the next run reuses for its own data. These
tests hold a task of an abandoned run on a worker, or run many small partitions under a
CPU hog, and have every task check that it read its own data.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from detflow.executors import shm
from detflow.executors.dask_ import DaskExecutor
from detflow.nodes.runner import PartitionTask
from detflow.sources.base import PartitionPlan
from detflow.sources.memory import MemorySource
from tests.conftest import EXECUTOR_SPECS

SIG = (16, 16)


@pytest.fixture
def dask_executor(_executors) -> DaskExecutor:
    """The session's local dask cluster (the one ``executor`` gives as ``dask``)."""
    if "dask" not in _executors:
        _executors["dask"] = EXECUTOR_SPECS["dask"]()
    return _executors["dask"]


def _stamped(run: int, n_frames: int, dtype: str = "uint32") -> np.ndarray:
    """Frames whose every pixel says which run and which frame they are."""
    stamp = run * 100_000 + np.arange(n_frames, dtype=np.int64)
    return np.broadcast_to(stamp[:, None, None], (n_frames, *SIG)).astype(dtype).reshape(1, n_frames, *SIG)


def _tasks(data: np.ndarray, n: int) -> list[PartitionTask]:
    src = MemorySource(data=data)
    return [PartitionTask(p, udfs=()) for p in src.partitions(PartitionPlan(num_partitions=n))]


def _wait_file(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _what_it_read(task: PartitionTask, run: int) -> str:
    """``"ok"`` when the task read its own frames, else what it read instead."""
    frames = task.partition.frames
    try:
        data = task.partition.read()
    except FileNotFoundError as err:
        return f"gone: {err}"
    want = run * 100_000 + np.arange(frames.start, frames.stop)
    got = data.reshape(len(data), -1)
    if not (got == want[:, None]).all():
        return f"another item's data: frame stamps {sorted(set(got[:, 0].tolist()))[:4]}, wanted {want[:4].tolist()}"
    return "ok"


def _held_then_read(task: PartitionTask, *, run: int, gate: str, note: str) -> int:
    """Partition 0 waits for file ``gate`` before it reads, and writes what it read to ``note``."""
    if task.partition.index == 0:
        Path(note + ".started").touch()
        if not _wait_file(Path(gate), 60):
            raise TimeoutError("the test never opened the gate")
        Path(note + ".tmp").write_text(_what_it_read(task, run))
        os.replace(note + ".tmp", note)  # whole, or not there
    return task.partition.index


@pytest.mark.parametrize("then", ["reused", "trimmed"])
def test_a_task_of_an_abandoned_run_reads_its_own_data(dask_executor, tmp_path, then: str) -> None:
    ex = dask_executor
    gate, note = tmp_path / "gate", tmp_path / "note"
    run = ex.map_unordered(functools.partial(_held_then_read, run=1, gate=str(gate), note=str(note)),
                           _tasks(_stamped(1, 32), 4))
    assert next(run) != 0  # a quick partition; 0 is held on a worker
    assert _wait_file(Path(str(note) + ".started"), 60), "partition 0 never started"
    run.close()  # abandoned while partition 0 runs and has not read its segment yet
    staged = []
    if then == "reused":  # what the next run does first: stage its partitions (of the same size)
        staged = [shm.stage(t) for t in _tasks(_stamped(2, 32), 4)]
    else:  # what closing any executor of this process does
        shm.trim()
    gate.touch()
    assert _wait_file(note, 60), "the held partition never finished"
    for _, release in staged:
        release()
    assert note.read_text() == "ok"
    # and its segment is given back once the task is done
    deadline = time.monotonic() + 60
    while shm.live_segments() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not shm.live_segments()


# --- stress: many small partitions under a CPU hog ---------------------------------------------
_HOG = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def _checked_sum(task: PartitionTask, *, run: int, log: str) -> tuple[int, float]:
    """Read, check the stamps, sum; what is wrong goes to ``log`` too (an abandoned task's
    error reaches nobody), as does the end of every task."""
    time.sleep(0.002 * (task.partition.index % 3))  # tasks start reading at staggered moments
    what = _what_it_read(task, run)
    with open(log, "a") as f:
        f.write(f"end {run} {task.partition.index} {what}\n")
    if what != "ok":
        raise AssertionError(what)
    return task.partition.index, float(task.partition.read().astype(np.float64).sum())


@pytest.mark.slow
def test_many_small_partitions_under_a_cpu_hog_read_only_their_own_data(dask_executor, tmp_path) -> None:
    ex = dask_executor
    log = tmp_path / "log"
    n_parts, n_frames = 48, 96
    cores = len(os.sched_getaffinity(0))
    # one busy loop per core, for a bounded time, ending by itself
    hogs = [subprocess.Popen([sys.executable, "-c", _HOG.format(seconds=30)]) for _ in range(cores)]
    submitted = 0
    try:
        deadline = time.monotonic() + 15
        for run in range(1, 31):
            data = _stamped(run, n_frames)
            fn = functools.partial(_checked_sum, run=run, log=str(log))
            results = ex.map_unordered(fn, _tasks(data, n_parts))
            if run % 2:  # abandoned after a few results, with tasks still on the workers
                for _ in range(1 + run % 5):
                    next(results)
                results.close()
                continue
            got = dict(results)
            flat = data.reshape(n_frames, -1).astype(np.float64)
            bounds = [(t.partition.frames.start, t.partition.frames.stop) for t in _tasks(data, n_parts)]
            assert got == {i: flat[lo:hi].sum() for i, (lo, hi) in enumerate(bounds)}
            submitted += 1
            if time.monotonic() > deadline:
                break
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    # abandoned tasks may still be running: wait until every segment came back (they all end)
    deadline = time.monotonic() + 60
    while shm.live_segments() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = log.read_text().splitlines()
    wrong = [line for line in lines if not line.endswith(" ok")]
    assert submitted >= 1 and not wrong, wrong[:5]
    assert not shm.live_segments()
