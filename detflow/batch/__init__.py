"""Durable batch runs: one task per input, a work queue with leases, retries and dead letters.

``detflow batch GRAPH.yaml --inputs 'data/**/*.hdr'`` is the command; this package is
also a Python API for work listed in code::

    from detflow.batch import SQLiteQueue, SequentialProcessor, batch_enqueue, launch_workers

See :mod:`detflow.batch.base` for the queue's states and :mod:`detflow.batch.workers`
for what a worker does.
"""

from __future__ import annotations

from detflow.batch.base import (
    Attempt,
    EnqueueResult,
    Lease,
    Queue,
    QueueError,
    QueueSchemaError,
    TaskInfo,
    open_queue,
    task_id,
)
from detflow.batch.spec import WorkSpecification, batch_enqueue
from detflow.batch.sqlite_ import SQLiteQueue
from detflow.batch.workers import (
    DaskProcessor,
    ProcessPoolProcessor,
    SequentialProcessor,
    WorkerReport,
    launch_workers,
)

__all__ = [
    "Attempt",
    "DaskProcessor",
    "EnqueueResult",
    "Lease",
    "ProcessPoolProcessor",
    "Queue",
    "QueueError",
    "QueueSchemaError",
    "SQLiteQueue",
    "SequentialProcessor",
    "TaskInfo",
    "WorkSpecification",
    "WorkerReport",
    "batch_enqueue",
    "launch_workers",
    "open_queue",
    "task_id",
]
