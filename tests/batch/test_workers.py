"""launch_workers with each processor: ids handed to the callable, failures, dead children, lost leases."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from detflow.batch import (
    Lease,
    ProcessPoolProcessor,
    SequentialProcessor,
    SQLiteQueue,
    batch_enqueue,
    launch_workers,
)
from detflow.batch.workers import should_stop
from tests.batch import helpers


@pytest.fixture
def q(tmp_path):
    queue = SQLiteQueue(tmp_path / "q.db")
    yield queue
    queue.close()


def test_job_and_worker_ids_reach_the_callable_but_not_the_task(q, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    q.enqueue([{"x": i, "out": str(out)} for i in range(6)])
    report = launch_workers(q, SequentialProcessor(helpers.record), num_workers=2, job_id="job42")
    assert report.done == 6 and report.failed == 0
    seen = {int(p.name): p.read_text().split() for p in out.iterdir()}
    assert sorted(seen) == list(range(6))
    assert {v[1] for v in seen.values()} == {"job42"}
    workers = {v[2] for v in seen.values()}
    assert all(w.endswith(("-job42-w0", "-job42-w1")) for w in workers)
    for t in q.tasks():
        assert set(t.payload) == {"x", "out"}  # _job_id / _worker_id were never stored
        assert t.state == "done"
        assert q.get(t.id).attempts[0].worker_id in workers


def test_process_pool_keeps_the_error_type_text_and_traceback(q) -> None:
    q.enqueue([{"x": i} for i in range(4)], max_retries=1)
    processor = ProcessPoolProcessor(helpers.fail_if_odd)
    report = launch_workers(q, processor, num_workers=2)
    processor.close()
    assert (report.done, report.failed, report.retried, report.dead) == (2, 4, 2, 2)
    dead = q.tasks("dead")
    assert sorted(t.payload["x"] for t in dead) == [1, 3]
    for t in dead:
        attempts = q.get(t.id).attempts
        assert [a.outcome for a in attempts] == ["failed", "failed"]
        assert attempts[0].error == f"ZeroDivisionError: odd input {t.payload['x']}"
        assert "helpers.py" in attempts[0].traceback and "fail_if_odd" in attempts[0].traceback


def test_a_child_killed_by_a_signal_fails_its_task_and_the_next_child_carries_on(q, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()

    def task(kind: str, x: int, _job_id: str, _worker_id: str) -> None:
        if kind == "kill":
            helpers.kill_self(_job_id, _worker_id)
        helpers.record(x, str(out), _job_id, _worker_id)

    q.enqueue([{"kind": "kill", "x": 0}], max_retries=1)
    q.enqueue([{"kind": "ok", "x": i} for i in range(1, 4)])
    processor = ProcessPoolProcessor(task)
    report = launch_workers(q, processor, num_workers=1)
    processor.close()
    assert (report.done, report.dead) == (3, 1)
    (dead,) = q.tasks("dead")
    errors = [a.error for a in q.get(dead.id).attempts]
    assert len(errors) == 2 and all("died while running the task (signal SIGKILL)" in e for e in errors)
    assert sorted(int(p.name) for p in out.iterdir()) == [1, 2, 3]


def test_a_lost_lease_stops_the_task_and_its_result_is_discarded(q, tmp_path) -> None:
    """Another worker takes the task (as after an expiry); the heartbeat notices and stops it."""
    q.enqueue([{"i": 0}])
    started = threading.Event()
    stopped = threading.Event()

    def task(i: int, _job_id: str, _worker_id: str) -> None:
        started.set()
        deadline = time.monotonic() + 120
        while not should_stop():
            assert time.monotonic() < deadline, "the lost lease was never noticed"
            time.sleep(0.01)
        stopped.set()

    events = []
    thread = threading.Thread(target=lambda: events.append(launch_workers(
        q, SequentialProcessor(task), visibility_timeout=0.4, on_event=lambda k, lease, d: events.append(k))))
    thread.start()
    assert started.wait(120)
    other = SQLiteQueue(q.location)
    helpers.raw_execute(q.location, "UPDATE detflow_tasks SET token = 'stolen', worker_id = 'thief', "
                                    "lease_expires = lease_expires + 3600")
    assert stopped.wait(120)
    (t,) = other.tasks()
    assert (t.state, t.worker_id) == ("leased", "thief")  # the thief's lease is untouched
    assert other.complete(Lease(t.id, t.payload, "stolen", "thief", 1, 0.0))  # the thief finishes: nothing is left
    thread.join(120)
    report = events[-1]
    assert report.lost == 1 and report.done == 0 and "lost" in events
    other.close()


def test_max_consecutive_failures_and_time_limit(q) -> None:
    q.enqueue([{"x": 2 * i + 1} for i in range(5)], max_retries=0)
    report = launch_workers(q, SequentialProcessor(helpers.fail_if_odd), num_workers=1, max_consecutive_failures=2)
    assert report.failed == 2 and len(report.stopped_workers) == 1
    assert q.counts()["pending"] == 3
    report = launch_workers(q, SequentialProcessor(helpers.fail_if_odd), time_limit=0)
    assert report.failed == 0 and q.counts()["pending"] == 3  # no task is started past the limit


def test_workers_wait_for_tasks_leased_elsewhere_and_take_them_when_they_expire(q, tmp_path) -> None:
    q.enqueue([{"x": 1, "out": str(tmp_path)}])
    other = SQLiteQueue(q.location)
    abandoned = other.lease("a-launcher-that-died", visibility_timeout=0.5)
    other.close()
    report = launch_workers(q, SequentialProcessor(helpers.record), poll_interval=0.1)
    assert report.done == 1
    assert [a.outcome for a in q.get(abandoned.task_id).attempts] == ["expired", "done"]


def test_batch_enqueue_lists_in_parallel_and_skips_done(q) -> None:
    class Spec:
        def __init__(self) -> None:
            self.threads: set[int] = set()
            self.barrier = threading.Barrier(4, timeout=60)

        def task_seeds(self):
            return range(4)

        def list_tasks(self, seed, force):
            self.barrier.wait()  # four seeds listed at once, or this times out
            self.threads.add(threading.get_ident())
            return [{"seed": seed, "k": k} for k in range(3)]

        def already_done(self, task):
            return task["k"] == 0

    spec = Spec()
    listing = batch_enqueue(q, spec, num_retries=4, max_workers=4)
    assert len(listing.tasks) == 12 and len(listing.skipped) == 4 and len(spec.threads) == 4
    assert {t.max_retries for t in q.tasks()} == {4} and len(q.tasks()) == 8
    dry = batch_enqueue(q, spec, force=True, dry_run=True)
    assert dry.skipped == () and dry.result.added == () and len(q.tasks()) == 8
    forced = batch_enqueue(q, spec, force=True)
    assert len(forced.result.added) == 4 and len(q.tasks()) == 12


def test_process_children_die_with_the_launcher(tmp_path) -> None:
    """The launcher is killed with SIGKILL; its child, mid-task, dies too."""
    import signal
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    started = tmp_path / "started"
    script = f"""
import sys
sys.path.insert(0, {str(repo)!r})
from detflow.batch import SQLiteQueue, ProcessPoolProcessor, launch_workers
from tests.batch.helpers import wait_for_file
q = SQLiteQueue({str(tmp_path / 'q.db')!r})
q.enqueue([{{"path": {str(tmp_path / 'never')!r}, "started": {str(started)!r}}}])
launch_workers(q, ProcessPoolProcessor(wait_for_file))
"""
    launcher = subprocess.Popen([sys.executable, "-c", script], cwd=repo)
    deadline = time.monotonic() + 120
    while not started.exists() or not started.read_text():
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.02)
    child = int(started.read_text())
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait(60)
    deadline = time.monotonic() + 60
    while _alive(child):
        assert time.monotonic() < deadline, "the child outlived its launcher"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_heartbeat_keeps_a_task_longer_than_the_visibility_timeout(q) -> None:
    """A task that outlives its first lease by a second is renewed, not lost (beats every 1 s of 4 s)."""
    q.enqueue([{"i": 0}])

    def task(i: int, _job_id: str, _worker_id: str) -> None:
        (t,) = q.tasks()
        first_expiry = t.lease_expires
        deadline = time.monotonic() + 120
        while time.time() < first_expiry + 1.0:  # the event: the first lease's expiry has passed
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert q.tasks()[0].lease_expires > first_expiry  # renewed meanwhile

    report = launch_workers(q, SequentialProcessor(task), visibility_timeout=4.0)
    assert (report.done, report.lost, report.failed) == (1, 0, 0)
    (t,) = q.tasks()
    assert [a.outcome for a in q.get(t.id).attempts] == ["done"]


def test_a_lost_lease_kills_the_child_running_the_task(q, tmp_path) -> None:
    started = tmp_path / "started"
    q.enqueue([{"path": str(tmp_path / "never"), "started": str(started)}])
    processor = ProcessPoolProcessor(helpers.wait_for_file)
    reports = []
    thread = threading.Thread(target=lambda: reports.append(
        launch_workers(q, processor, visibility_timeout=0.4, poll_interval=0.1)))
    thread.start()
    deadline = time.monotonic() + 120
    while not started.exists() or not started.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int(started.read_text())
    helpers.raw_execute(q.location, "UPDATE detflow_tasks SET token = 'stolen', lease_expires = lease_expires + 3600")
    deadline = time.monotonic() + 120
    while _alive(child):
        assert time.monotonic() < deadline, "the child of a lost lease was not stopped"
        time.sleep(0.02)
    (t,) = q.tasks()
    assert q.complete(Lease(t.id, t.payload, "stolen", "thief", 1, 0.0))
    thread.join(120)
    processor.close()
    assert reports[0].lost == 1 and reports[0].done == 0
