"""Closing an executor leaves no process behind (the README's promise), for the executors
that start processes: dask's local cluster and the delayed executor's process scheduler.
(The pipelined executor's own lifecycle tests are in test_pipelined.py.)"""

from __future__ import annotations

import os
import time

import psutil
import pytest

from detflow.executors.dask_ import DaskExecutor
from detflow.executors.delayed import DelayedExecutor


def _pid(_: object) -> int:
    return os.getpid()


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _gone_within(pids: set[int], seconds: float) -> set[int]:
    """Pids still running ``seconds`` after the close returned (measured from it)."""
    deadline = time.monotonic() + seconds
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.05)
    return alive


@pytest.mark.parametrize("make", [
    pytest.param(lambda: DaskExecutor.make_local(cpus=2), id="dask"),
    pytest.param(lambda: DelayedExecutor("processes", cpus=2), id="delayed-processes"),
])
def test_close_leaves_no_process_behind(make) -> None:
    before = _children()
    ex = make()
    worker_pids = set(ex.map_unordered(_pid, range(8)))
    assert os.getpid() not in worker_pids  # the work ran in other processes
    # multiprocessing's resource tracker is one per interpreter, shared by every user of
    # shared memory, and ends with the interpreter: not a process this executor owns
    from multiprocessing import resource_tracker

    tracker = {resource_tracker._resource_tracker._pid}
    started = (_children() - before - tracker) | worker_pids
    assert started
    ex.close()
    left = _gone_within(started, 60)
    assert not left, {p: _describe(p) for p in left}


def _describe(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:200]
    except psutil.Error as err:
        return repr(err)
