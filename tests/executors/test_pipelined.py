"""The pipelined executor: worker loss, clean shutdown, scripts, transport and routing.

The shared conformance suite (every ``ctx``/``executor`` test) already runs on the
session's pipelined executor; these tests cover what is particular to processes. Most
share one module-scoped pool; tests that kill or close it make their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import detflow as df
from detflow.errors import ConfigurationError
from detflow.executors.pipelined import PipelinedExecutor, WorkerLostError
from detflow.nodes import SumUDF
from detflow.nodes.base import UDF
from detflow.nodes.runner import PartitionTask
from detflow.shm import live_segments, pooled_segments
from detflow.sources.base import PartitionPlan
from detflow.sources.memory import MemorySource


@pytest.fixture(scope="module")
def pool():
    ex = PipelinedExecutor.make_local(cpus=2)
    yield ex
    ex.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _segments() -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"detflow_{os.getpid()}_"))


def _data() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 1000, (6, 8, 16, 16)).astype(np.uint16)


# --- worker loss --------------------------------------------------------------------
class DiesInWorker(UDF):
    """Kills its worker process on partition 1 (only in a worker, never the driver), noting
    in file ``note`` the moment it dies (``time.monotonic`` is one clock for every process)."""

    def __init__(self, driver: int, note: str) -> None:
        super().__init__(driver=driver, note=note)

    def get_result_buffers(self):
        return {"s": self.buffer(kind="sig", dtype="float64")}

    def process_partition(self, partition):
        if self.meta.partition_index == 1 and os.getpid() != self.params.driver:
            Path(self.params.note).write_text(repr(time.monotonic()))
            os._exit(7)
        self.results.s[:] += partition.sum(axis=0)

    def merge(self, dest, src):
        dest.s[:] += src.s


def test_worker_death_fails_fast_and_executor_recovers(pool, tmp_path) -> None:
    ctx = df.Context(pool)
    data = _data()
    ds = ctx.load("memory", data=data, num_partitions=4)
    before = pool.worker_pids
    note = tmp_path / "died_at"
    with pytest.raises(WorkerLostError, match=r"pipelined worker \d \(pid \d+\) exited with code 7 while "
                                              r"running partition 1 \(frames 12:24\)") as info:
        ctx.run_udf(dataset=ds, udf=DiesInWorker(driver=os.getpid(), note=str(note)))
    # noticed at once (socket EOF, or the 0.2 s poll), not after some long timeout: a bound measured
    # from the death itself, so a slow start of the run does not count against it
    assert time.monotonic() - float(note.read_text()) < 10
    dead = next(p for p in before if f"pid {p})" in str(info.value))
    assert not _wait_gone([dead])
    assert dead not in pool.worker_pids and len(pool.worker_pids) == 2
    assert not live_segments() and _segments() == pooled_segments()
    # the same executor runs the next graph, on a fresh worker
    res = ctx.run_udf(dataset=ds, udf=SumUDF())
    np.testing.assert_allclose(res["intensity"].data, data.sum(axis=(0, 1)))
    # a worker killed while idle is replaced too, and the run does not notice
    victim = pool.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30  # until it can be reaped: all its threads (and sockets) gone
    while os.waitid(os.P_PID, victim, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    res = ctx.run_udf(dataset=ds, udf=SumUDF())
    np.testing.assert_allclose(res["intensity"].data, data.sum(axis=(0, 1)))
    assert victim not in pool.worker_pids and len(pool.worker_pids) == 2


# --- errors -------------------------------------------------------------------------
class CustomError(Exception):
    pass


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("no pickling this")


def _raise_custom(x: int) -> int:
    if x == 2:
        raise CustomError(f"bad item {x}")
    return x


def _raise_unpicklable(x: int) -> int:
    raise Unpicklable("deep down")


def test_errors_keep_type_and_worker_traceback(pool) -> None:
    with pytest.raises(CustomError, match="bad item 2") as info:
        list(pool.map_unordered(_raise_custom, range(5)))
    notes = "\n".join(info.value.__notes__)
    assert "worker traceback (worker" in notes and "_raise_custom" in notes
    with pytest.raises(RuntimeError, match=r"Unpicklable\('deep down'\).*could not be pickled") as info2:
        list(pool.map_unordered(_raise_unpicklable, [1]))
    assert "_raise_unpicklable" in str(info2.value)
    assert sorted(pool.map_unordered(_raise_custom, [0, 1, 3])) == [0, 1, 3]  # still usable


# --- transport, routing, bounds -----------------------------------------------------
def _reader_kind(task: PartitionTask) -> str:
    return type(task.partition.reader).__name__


def test_memory_partitions_travel_through_shared_memory(pool) -> None:
    src = MemorySource(data=_data())
    tasks = [PartitionTask(p, udfs=()) for p in src.partitions(PartitionPlan(num_partitions=3))]
    assert set(pool.map_unordered(_reader_kind, tasks)) == {"SharedArrayReader"}
    assert not live_segments() and _segments() == pooled_segments()


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _held_or_quick(item: str) -> tuple[str, int]:
    """``("quick", pid)`` at once, or for ``"held:<path>"``, ``("held", pid)`` once the file exists."""
    if item.startswith("held:"):
        gate = Path(item[len("held:"):])
        deadline = time.monotonic() + 60  # a bound, so that a broken dispatch fails instead of hanging
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return "held", os.getpid()
    return "quick", os.getpid()


def test_items_go_to_the_least_loaded_worker(pool, tmp_path) -> None:
    """One held item holds one worker; the quick ones flow to the other."""
    gate = tmp_path / "go"
    quick = 20
    got = []
    for kind, pid in pool.map_unordered(_held_or_quick, [f"held:{gate}"] + ["quick"] * quick):
        got.append((kind, pid))
        if kind == "quick" and len(got) == quick - 1:
            gate.touch()  # all but the one that may wait behind the held item are done: let it go
    held = [pid for kind, pid in got if kind == "held"]
    assert len(held) == 1 and len(got) == quick + 1, got
    behind = [pid for kind, pid in got if kind == "quick" and pid == held[0]]
    assert len(behind) <= 1, got  # at most one queued behind the held item


def test_items_in_flight_are_bounded(pool) -> None:
    taken = []

    def items():
        for i in range(40):
            taken.append(i)
            yield i

    results = pool.map_unordered(abs, items())
    first = next(results)
    assert len(taken) <= 2 * 2 + 1, taken
    assert sorted([first, *results]) == list(range(40))


def test_abandoned_and_interleaved_runs(pool) -> None:
    gen = pool.map_unordered(_pid_after, [0.05] * 10)
    next(gen)
    gen.close()  # late replies of this run are dropped
    a = pool.map_unordered(abs, range(0, -30, -1))
    b = pool.map_unordered(abs, range(100, 130))
    got_a, got_b = [], []
    for x, y in zip(a, b, strict=True):
        got_a.append(x)
        got_b.append(y)
    assert sorted(got_a) == list(range(30)) and sorted(got_b) == list(range(100, 130))


def _worker_env(_: object) -> tuple[str, str, list[int]]:
    return os.environ["OMP_NUM_THREADS"], os.environ["NUMBA_NUM_THREADS"], sorted(os.sched_getaffinity(0))


def test_workers_are_single_threaded_and_pinned(pool) -> None:
    out = set()
    for omp, numba, cpus in pool.map_unordered(_worker_env, range(8)):
        assert (omp, numba) == ("1", "1")
        assert len(cpus) == 1
        out.add(cpus[0])
    assert out <= set(os.sched_getaffinity(0))
    # each worker on a CPU of its own (asked of the processes, not of whichever took the items)
    pinned = [sorted(os.sched_getaffinity(pid)) for pid in pool.worker_pids]
    if len(os.sched_getaffinity(0)) >= 2:
        assert len(pinned) == 2 and pinned[0] != pinned[1] and all(len(c) == 1 for c in pinned), pinned


def test_make_spec() -> None:
    assert [s.name for s in PipelinedExecutor.make_spec(3)] == ["0", "1", "2"]
    assert [s.cpu for s in PipelinedExecutor.make_spec([0])] == [0]
    with pytest.raises(ConfigurationError, match="GPU workers"):
        PipelinedExecutor.make_spec(1, cudas=[0])
    with pytest.raises(ConfigurationError, match="cpus must be an integer >= 1; got 0"):
        PipelinedExecutor.make_spec(0)


# --- lifecycle (own pools) ----------------------------------------------------------
def test_make_with_and_close_leave_nothing_behind() -> None:
    data = _data()
    with df.Context.make_with("pipelined", cpus=2) as ctx:
        ex = ctx.executor
        assert isinstance(ex, PipelinedExecutor) and ex.n_workers == 2
        pids = ex.worker_pids
        ds = ctx.load("memory", data=data, num_partitions=6)
        res = ctx.run_udf(dataset=ds, udf=SumUDF())
        np.testing.assert_allclose(res["intensity"].data, data.sum(axis=(0, 1)))
        # leave a run half-consumed, with partitions (and their segments) in flight
        it = ctx.run_udf_iter(dataset=ds, udf=SumUDF())
        next(it)
        assert _segments()
    assert not [p for p in pids if _alive(p)]  # close() waited for them: gone the moment it returns
    assert not _segments() and not live_segments() and not pooled_segments()
    with pytest.raises(RuntimeError, match="closed"):
        list(ex.map_unordered(abs, [1]))
    ex.close()  # twice is fine


SCRIPT = """
import json, os, sys
import numpy as np
import detflow as df
from detflow.nodes.base import UDF

class MainSum(UDF):  # defined in __main__: travels by value
    def get_result_buffers(self):
        return {"s": self.buffer(kind="sig", dtype="float64")}
    def process_tile(self, tile):
        self.results.s[:] += tile.sum(axis=0)
    def merge(self, dest, src):
        dest.s[:] += src.s

ctx = df.Context.make_with("pipelined", cpus=2)
data = np.ones((4, 4, 8, 8), dtype=np.uint16)
res = ctx.run_udf(dataset=ctx.load("memory", data=data, num_partitions=4), udf=MainSum())
print(json.dumps({"total": float(res["s"].data.sum()), "pids": ctx.executor.worker_pids, "me": os.getpid()}),
      flush=True)
if len(sys.argv) > 1:
    os.kill(os.getpid(), 9)  # the driver dies hard: its workers must follow
# no close(), no __main__ guard
"""


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_script_without_main_guard(tmp_path, how) -> None:
    script = tmp_path / "no_guard.py"
    script.write_text(textwrap.dedent(SCRIPT))
    args = [sys.executable, str(script)] + (["kill"] if how == "sigkill" else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == (0 if how == "exit" else -signal.SIGKILL), proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["total"] == 4 * 4 * 8 * 8
    assert not _wait_gone(out["pids"])  # they follow their dead driver: measured from its death
    # shared memory: unlinked at exit, or by multiprocessing's resource tracker after a SIGKILL
    deadline = time.monotonic() + 30.0
    while (left := [n for n in os.listdir("/dev/shm") if n.startswith(f"detflow_{out['me']}_")]):
        assert time.monotonic() < deadline, left
        time.sleep(0.05)
    if how == "exit":
        assert proc.stderr == "", proc.stderr
