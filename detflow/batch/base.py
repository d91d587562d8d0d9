"""What a work queue is: tasks, leases, attempts, and the small interface every store keeps.

State of a task, and what moves it::

    pending ──lease──> leased ──complete──> done
       ^                 │ fail / lease expired
       │                 ├── failures <= max_retries ──> pending   (retried)
       │                 └── otherwise ───────────────> dead       (the dead-letter state)
       └── retry (dead, or done with force) / enqueue with force

* A task's id is a hash of its content (:func:`task_id`), so enqueuing the same work twice
  adds nothing.
* A lease is held for ``visibility_timeout`` seconds and renewed by :meth:`Queue.heartbeat`.
  Each lease carries a fresh token; ``heartbeat``, ``complete`` and ``fail`` succeed only
  for the token that holds the task now, so a worker whose lease expired (and was given to
  another worker) can neither complete the task nor record a result for it: a task
  completes exactly once.
* A lease that expires counts as a failed attempt ("lease expired"), so a task that kills
  every worker it lands on still ends in the dead-letter state.
* Every attempt is kept with its worker, times, outcome, error text and traceback.

Stores: :mod:`detflow.batch.sqlite_` (one file, no server; the default) and
:mod:`detflow.batch.postgres_` (for launchers on several machines); :func:`open_queue` picks
one from a path or URL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from detflow.errors import ConfigurationError, DetflowError
from detflow.registry import Registry

__all__ = [
    "STATES",
    "Attempt",
    "EnqueueResult",
    "Lease",
    "LeaseLostError",
    "Queue",
    "QueueError",
    "QueueSchemaError",
    "TaskInfo",
    "open_queue",
    "task_id",
]

#: Every state a task can be in, in the order summaries list them.
STATES = ("pending", "leased", "done", "dead")


class QueueError(DetflowError, OSError):
    """A queue that cannot be opened, read or written."""


class LeaseLostError(DetflowError, RuntimeError):
    """A task's lease was lost while it ran (it expired and went to another worker)."""


class QueueSchemaError(QueueError):
    """A queue written by a newer detflow (its schema version is higher than this one's)."""


def canonical_json(payload: Mapping[str, Any]) -> str:
    """The payload as JSON with sorted keys and no spaces: the text its id is made from."""
    try:
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ConfigurationError(f"a task holds JSON data (strings, numbers, lists, mappings); "
                                 f"got {payload!r}: {err}") from err


def task_id(payload: Mapping[str, Any]) -> str:
    """A task's id: 16 hex digits of the SHA-256 of its canonical JSON.

    Examples
    --------
    >>> task_id({"input": "a.hdr", "n": 1}) == task_id({"n": 1, "input": "a.hdr"})
    True
    >>> len(task_id({}))
    16
    """
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Lease:
    """A task handed to one worker until ``expires`` (seconds since the epoch)."""

    task_id: str
    payload: dict[str, Any]
    token: str
    worker_id: str
    attempt: int
    expires: float


@dataclass(frozen=True)
class Attempt:
    """One try at a task: who ran it, when, and how it ended."""

    number: int
    worker_id: str
    started: float
    ended: float | None
    outcome: str  # running | done | failed | expired | released
    error: str | None = None
    traceback: str | None = None


@dataclass(frozen=True)
class TaskInfo:
    """A task as the queue holds it, with its attempts when asked for them."""

    id: str
    payload: dict[str, Any]
    state: str
    failures: int
    max_retries: int
    worker_id: str | None
    lease_expires: float | None
    created: float
    updated: float
    attempts: tuple[Attempt, ...] = field(default=())

    @property
    def last_error(self) -> str | None:
        errors = [a.error for a in self.attempts if a.error]
        return errors[-1] if errors else None


@dataclass(frozen=True)
class EnqueueResult:
    """What an enqueue did: ids added, ids already there, ids reset to pending (``force``)."""

    added: tuple[str, ...]
    existing: tuple[str, ...]
    reset: tuple[str, ...] = ()


class Queue(Protocol):
    """A durable work queue. Every method is safe to call from several processes at once."""

    location: str

    def enqueue(self, payloads: Iterable[Mapping[str, Any]], *, max_retries: int = 2,
                force: bool = False) -> EnqueueResult:
        """Add tasks; ``force`` also resets done and dead ones to pending."""
        ...

    def lease(self, worker_id: str, *, visibility_timeout: float) -> Lease | None:
        """The oldest pending (or expired) task, leased to ``worker_id``; ``None`` if none."""
        ...

    def heartbeat(self, lease: Lease, *, visibility_timeout: float) -> bool:
        """Extend the lease; ``False`` if it is no longer held (expired and given away)."""
        ...

    def complete(self, lease: Lease) -> bool:
        """Mark the task done; ``False`` (and nothing changed) if the lease is no longer held."""
        ...

    def fail(self, lease: Lease, error: str, traceback: str = "", *, retry: bool = True) -> str | None:
        """Record a failed attempt; the task's new state (pending or dead), ``None`` if not held.

        ``retry=False`` parks the task as dead at once (an error that a retry cannot cure)."""
        ...

    def release(self, lease: Lease) -> bool:
        """Give the task back unfinished without counting a failure (a worker shutting down)."""
        ...

    def counts(self) -> dict[str, int]:
        """Tasks per state (expired leases count as pending)."""
        ...

    def tasks(self, state: str | None = None, *, limit: int | None = None) -> list[TaskInfo]:
        """Tasks in enqueue order, optionally of one state, without their attempts."""
        ...

    def get(self, task_id: str) -> TaskInfo:
        """One task with all its attempts; a unique id prefix is enough."""
        ...

    def retry(self, ids: Sequence[str] | None = None, *, state: str = "dead") -> int:
        """Put tasks back to pending with a fresh retry budget (``ids``, or every one in ``state``)."""
        ...

    def purge(self, state: str | None = None) -> int:
        """Delete tasks (of one state, or all that are not leased) with their attempts."""
        ...

    def close(self) -> None: ...


QUEUES = Registry("queue", "detflow.queues", {
    "sqlite": "detflow.batch.sqlite_:SQLiteQueue",
    "postgresql": "detflow.batch.postgres_:PostgresQueue",
})


def open_queue(location: str, *, create: bool = True) -> Queue:
    """Open the queue at ``location``: a file path (SQLite) or a ``postgresql://`` URL.

    ``create=False`` refuses a file that does not exist yet (for ``detflow queue``).
    """
    scheme, sep, _ = str(location).partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        cls = QUEUES.get("postgresql")
    elif sep and scheme != "sqlite":
        raise ConfigurationError(f"queue {location!r}: unknown scheme {scheme!r}; use a file path "
                                 "(SQLite) or postgresql://user@host/db")
    else:
        cls = QUEUES.get("sqlite")
        location = location.split("://", 1)[1] if sep else location
    obj: Queue = cls(location, create=create)
    return obj
