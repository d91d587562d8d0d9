"""Functions the batch tests run in other processes (importable, so they pickle by name)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any


def drain(location: str, worker: str, visibility_timeout: float = 60.0) -> list[str]:
    """Lease and complete tasks until none is left; the ids this process completed."""
    from detflow.batch import open_queue

    q = open_queue(location)
    done = []
    try:
        while (lease := q.lease(worker, visibility_timeout=visibility_timeout)) is not None:
            assert q.complete(lease)
            done.append(lease.task_id)
    finally:
        q.close()
    return done


def raw_execute(location: str, sql: str) -> None:
    """Run ``sql`` on the queue's database directly, behind the queue's back."""
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute(sql)
    else:
        conn = sqlite3.connect(location)
        with conn:
            conn.execute(sql)
        conn.close()


def record(x: int, out: str, _job_id: str, _worker_id: str) -> int:
    """A task that writes what it was given, and by whom, to ``out/x``."""
    Path(out, str(x)).write_text(f"{x} {_job_id} {_worker_id} {os.getpid()}")
    return x * x


def fail_if_odd(x: int, _job_id: str, _worker_id: str) -> int:
    if x % 2:
        raise ZeroDivisionError(f"odd input {x}")
    return x


def wait_for_file(path: str, _job_id: str, _worker_id: str, started: str | None = None, timeout: float = 300.0) -> str:
    """Block until ``path`` exists (after creating ``started``, if given)."""
    if started:
        Path(started).write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)
    return "ok"


def kill_self(_job_id: str, _worker_id: str, **kwargs: Any) -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
