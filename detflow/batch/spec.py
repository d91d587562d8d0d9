"""Listing work: a :class:`WorkSpecification` says what the tasks are and which are done.

``batch_enqueue`` lists the tasks of every seed, drops those already done (unless
``force``) and puts the rest in the queue. Listing and done-checks are I/O (globbing
folders, reading completion markers), so both run on a thread pool: thousands of
inputs on a network file system list in the time of a few.

Examples
--------
>>> import os, tempfile
>>> from detflow.batch import SQLiteQueue
>>> class Squares:
...     def task_seeds(self):
...         return [0, 10]
...     def list_tasks(self, seed, force):
...         return [{"n": n} for n in range(seed, seed + 3)]
...     def already_done(self, task):
...         return task["n"] == 0
>>> q = SQLiteQueue(os.path.join(tempfile.mkdtemp(), "q.db"))
>>> listing = batch_enqueue(q, Squares())
>>> len(listing.tasks), len(listing.skipped), len(listing.result.added)
(6, 1, 5)
>>> q.close()
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from detflow.batch.base import EnqueueResult, Queue, task_id

__all__ = ["Listing", "WorkSpecification", "batch_enqueue"]


@runtime_checkable
class WorkSpecification(Protocol):
    """What to run: seeds (folders, dates, ...), the tasks of each seed, and a done-check.

    A task is a mapping of JSON values; it is what the processor's callable gets as
    keyword arguments, and what the task's id is made from.
    """

    def task_seeds(self) -> Iterable[Any]:
        """Independent starting points for listing (listed in parallel)."""
        ...

    def list_tasks(self, seed: Any, force: bool) -> Iterable[Mapping[str, Any]]:
        """The tasks of one seed."""
        ...

    def already_done(self, task: Mapping[str, Any]) -> bool:
        """Whether ``task``'s outputs exist and are complete (then it is not enqueued)."""
        ...


@dataclass(frozen=True)
class Listing:
    """What :func:`batch_enqueue` found and did."""

    tasks: tuple[dict[str, Any], ...]
    skipped: tuple[str, ...]
    result: EnqueueResult

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(task_id(t) for t in self.tasks)


def _pool_size(n: int, max_workers: int | None) -> int:
    return max(1, min(n, max_workers or min(32, 4 * (os.cpu_count() or 1))))


def batch_enqueue(queue: Queue, spec: WorkSpecification, *, force: bool = False, num_retries: int = 2,
                  dry_run: bool = False, max_workers: int | None = None) -> Listing:
    """List ``spec``'s tasks, skip those already done, enqueue the rest.

    Parameters
    ----------
    queue
        Where the tasks go.
    spec
        The work (see :class:`WorkSpecification`).
    force
        Enqueue every task, done or not, and put tasks the queue holds as done or dead
        back to pending.
    num_retries
        How often a failing task is retried before it is parked in the dead-letter state.
    dry_run
        List and check, but change nothing.
    max_workers
        Threads for listing and done-checks (default: up to 32).

    Returns
    -------
    Listing
        Every task listed (in seed order), the ids skipped as done, and what the queue did.
    """
    seeds = list(spec.task_seeds())
    with ThreadPoolExecutor(_pool_size(len(seeds), max_workers), thread_name_prefix="detflow-list") as pool:
        per_seed = list(pool.map(lambda s: [dict(t) for t in spec.list_tasks(s, force)], seeds))
    tasks = [t for ts in per_seed for t in ts]
    unique: dict[str, dict[str, Any]] = {}
    for t in tasks:
        unique.setdefault(task_id(t), t)
    if force:
        done = [False] * len(unique)
    else:
        with ThreadPoolExecutor(_pool_size(len(unique), max_workers), thread_name_prefix="detflow-check") as pool:
            done = list(pool.map(spec.already_done, unique.values()))
    skipped = tuple(i for i, d in zip(unique, done, strict=True) if d)
    todo = [t for t, d in zip(unique.values(), done, strict=True) if not d]
    result = EnqueueResult((), (), ()) if dry_run else queue.enqueue(todo, max_retries=num_retries, force=force)
    return Listing(tuple(unique.values()), skipped, result)
