"""The queue's contract, run against every store (SQLite and a real PostgreSQL server).

Expiry is tested by waiting for it: a lease of a fraction of a second is taken, and the
test polls until another worker can lease the task, with a generous overall bound.
"""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest

from detflow.batch import QueueError, QueueSchemaError, open_queue, task_id
from detflow.errors import ConfigurationError
from tests.batch.helpers import drain, raw_execute


def _wait_lease(q, worker: str, timeout: float = 120.0):
    """Poll until ``worker`` gets a lease (the event the test waits for)."""
    deadline = time.monotonic() + timeout
    while (lease := q.lease(worker, visibility_timeout=60)) is None:
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.05)
    return lease


def test_enqueue_twice_adds_nothing(queue) -> None:
    tasks = [{"input": f"s{i}.hdr", "n": i} for i in range(5)]
    first = queue.enqueue(tasks)
    assert first.added == tuple(task_id(t) for t in tasks)
    again = queue.enqueue([{"n": 3, "input": "s3.hdr"}, *tasks])  # key order does not matter
    assert again.added == ()
    assert set(again.existing) == set(first.added)
    assert queue.counts() == {"pending": 5, "leased": 0, "done": 0, "dead": 0}
    assert [t.payload for t in queue.tasks()] == tasks


def test_lease_in_order_and_complete(queue) -> None:
    queue.enqueue([{"i": i} for i in range(3)])
    a = queue.lease("w1", visibility_timeout=60)
    b = queue.lease("w2", visibility_timeout=60)
    assert (a.payload, b.payload, a.attempt) == ({"i": 0}, {"i": 1}, 1)
    assert queue.counts()["leased"] == 2
    assert queue.complete(a)
    assert not queue.complete(a)  # a task completes once
    assert queue.heartbeat(b, visibility_timeout=60)
    assert queue.complete(b)
    c = queue.lease("w1", visibility_timeout=60)
    assert queue.complete(c)
    assert queue.lease("w1", visibility_timeout=60) is None
    assert queue.counts() == {"pending": 0, "leased": 0, "done": 3, "dead": 0}
    info = queue.get(a.task_id)
    assert [(x.number, x.worker_id, x.outcome) for x in info.attempts] == [(1, "w1", "done")]


def test_heartbeat_extends_the_lease(queue) -> None:
    queue.enqueue([{"i": 0}])
    lease = queue.lease("w1", visibility_timeout=5)
    before = queue.get(lease.task_id).lease_expires
    assert queue.heartbeat(lease, visibility_timeout=600)
    assert queue.get(lease.task_id).lease_expires > before + 500


def test_expired_lease_goes_to_the_next_worker_and_the_first_cannot_finish(queue) -> None:
    queue.enqueue([{"i": 0}], max_retries=3)
    first = queue.lease("w1", visibility_timeout=0.2)
    second = _wait_lease(queue, "w2")
    assert second.task_id == first.task_id and second.token != first.token and second.attempt == 2
    assert not queue.heartbeat(first, visibility_timeout=60)
    assert not queue.complete(first)
    assert queue.fail(first, "late") is None
    assert queue.complete(second)
    attempts = queue.get(first.task_id).attempts
    assert [a.outcome for a in attempts] == ["expired", "done"]
    assert "w1" in attempts[0].error and "expired" in attempts[0].error


def test_retries_then_dead_letter_with_every_error(queue) -> None:
    queue.enqueue([{"i": 0}], max_retries=2)
    states = []
    for n in range(3):
        lease = queue.lease(f"w{n}", visibility_timeout=60)
        states.append(queue.fail(lease, f"ValueError: try {n}", f"Traceback ...\nline {n}\n"))
    assert states == ["pending", "pending", "dead"]
    assert queue.lease("w9", visibility_timeout=60) is None
    info = queue.get(lease.task_id[:6])  # a prefix is enough
    assert info.state == "dead" and info.failures == 3
    assert [a.error for a in info.attempts] == [f"ValueError: try {n}" for n in range(3)]
    assert [a.traceback.splitlines()[-1] for a in info.attempts] == ["line 0", "line 1", "line 2"]
    assert queue.retry() == 1
    lease = queue.lease("w1", visibility_timeout=60)
    assert lease.attempt == 4 and queue.fail(lease, "again") == "pending"  # a fresh retry budget


def test_no_retry_for_permanent_errors_and_release_is_not_a_failure(queue) -> None:
    queue.enqueue([{"i": 0}, {"i": 1}], max_retries=5)
    a = queue.lease("w1", visibility_timeout=60)
    assert queue.fail(a, "GraphValidationError: bad", retry=False) == "dead"
    b = queue.lease("w1", visibility_timeout=60)
    assert queue.release(b)
    info = queue.get(b.task_id)
    assert (info.state, info.failures, info.attempts[-1].outcome) == ("pending", 0, "released")


def test_force_resets_done_and_dead(queue) -> None:
    queue.enqueue([{"i": 0}, {"i": 1}], max_retries=0)
    assert queue.complete(queue.lease("w", visibility_timeout=60))
    assert queue.fail(queue.lease("w", visibility_timeout=60), "boom") == "dead"
    result = queue.enqueue([{"i": 0}, {"i": 1}, {"i": 2}], force=True)
    assert len(result.added) == 1 and len(result.reset) == 2
    assert queue.counts()["pending"] == 3


def test_purge_and_lookup_errors(queue) -> None:
    queue.enqueue([{"i": i} for i in range(4)], max_retries=0)
    assert queue.complete(queue.lease("w", visibility_timeout=60))
    held = queue.lease("w", visibility_timeout=60)
    assert queue.purge("done") == 1
    with pytest.raises(ConfigurationError, match="cannot be purged"):
        queue.purge("leased")
    with pytest.raises(ConfigurationError, match="unknown task state 'finished'"):
        queue.tasks("finished")
    assert queue.purge() == 2  # the leased one stays
    assert [t.id for t in queue.tasks()] == [held.task_id]
    with pytest.raises(ConfigurationError, match="no task 'ffff"):
        queue.get("ffff")


def test_concurrent_processes_lease_each_task_once(queue_location) -> None:
    q = open_queue(queue_location)
    ids = q.enqueue([{"i": i} for i in range(200)]).added
    q.close()
    with ProcessPoolExecutor(4, mp_context=get_context("spawn")) as pool:
        done = list(pool.map(drain, [queue_location] * 4, [f"p{i}" for i in range(4)]))
    flat = [t for d in done for t in d]
    assert sorted(flat) == sorted(ids)  # every task, none twice
    q = open_queue(queue_location)
    assert q.counts()["done"] == 200
    q.close()


def test_a_newer_schema_is_refused(queue_location) -> None:
    open_queue(queue_location).close()
    raw_execute(queue_location, "UPDATE detflow_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(QueueSchemaError, match="newer detflow .*schema 99"):
        open_queue(queue_location)


# --- SQLite only ------------------------------------------------------------------------------
def test_sqlite_file_is_in_wal_mode(tmp_path) -> None:
    path = tmp_path / "q.db"
    open_queue(str(path)).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM detflow_meta WHERE key = 'schema_version'").fetchone()[0] == "1"
    conn.close()


def test_sqlite_files_that_are_not_queues(tmp_path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(QueueError, match="garbage.db.*not a readable SQLite database"):
        open_queue(str(garbage))
    assert garbage.read_bytes() == b"this is not a database at all" * 100  # left as it was
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(QueueError, match="not a detflow queue .*photos"):
        open_queue(str(other))
    with pytest.raises(QueueError, match="is a folder"):
        open_queue(str(tmp_path))
    with pytest.raises(QueueError, match="no such file"):
        open_queue(str(tmp_path / "missing.db"), create=False)
    with pytest.raises(ConfigurationError, match="unknown scheme 'redis'"):
        open_queue("redis://localhost/0")
