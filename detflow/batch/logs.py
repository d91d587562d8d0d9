"""Log lines that say which task and which worker they are about.

The task and worker ids live in a context variable set around each task
(:func:`task_context`); :class:`TaskContextFilter` copies them onto every log record as
``task_id`` and ``worker_id`` (``-`` outside a task), so any handler can print them with
:data:`FORMAT`. :func:`task_log_file` adds a handler that writes one task's lines, and
only that task's, to its own file, even while other tasks run in other threads.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["FORMAT", "TaskContextFilter", "call_task", "current_task", "install", "task_context", "task_log_file"]

FORMAT = "%(asctime)s %(levelname)-7s task=%(task_id)s worker=%(worker_id)s %(name)s: %(message)s"

_CURRENT: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("detflow_batch_task",
                                                                           default=("-", "-"))


def current_task() -> tuple[str, str]:
    """``(task_id, worker_id)`` of the task running in this context (``("-", "-")`` if none)."""
    return _CURRENT.get()


@contextlib.contextmanager
def task_context(task_id: str, worker_id: str) -> Iterator[None]:
    token = _CURRENT.set((task_id, worker_id))
    try:
        yield
    finally:
        _CURRENT.reset(token)


class TaskContextFilter(logging.Filter):
    """Adds ``task_id`` and ``worker_id`` to records; with ``only`` set, passes that task's alone."""

    def __init__(self, only: str | None = None) -> None:
        super().__init__()
        self.only = only

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "task_id"):
            record.task_id, record.worker_id = _CURRENT.get()
        return self.only is None or getattr(record, "task_id", None) == self.only


def install(level: int = logging.INFO) -> logging.Handler:
    """A console handler (stderr) on the root logger printing task and worker ids on every line."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(TaskContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    return handler


@contextlib.contextmanager
def task_log_file(path: str | os.PathLike[str], task_id: str) -> Iterator[str]:
    """Append this task's log lines to ``path`` while the block runs."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(TaskContextFilter(only=task_id))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()


def call_task(fn: Callable[..., Any], payload: dict[str, Any], job_id: str, worker_id: str) -> Any:
    """``fn(**payload, _job_id=job_id, _worker_id=worker_id)`` with the task's log context set.

    The two ids go to the call only; the payload (what the queue stores) is left as it is.
    """
    from detflow.batch.base import task_id

    with task_context(task_id(payload), worker_id):
        return fn(**payload, _job_id=job_id, _worker_id=worker_id)
