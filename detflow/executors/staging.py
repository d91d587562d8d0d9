"""Staging a task for another process: an in-memory partition's pixels go into shared memory.

The executors' side of :mod:`detflow.shm`: a task whose partition reads an array in
memory travels as a segment name instead of its pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from detflow.nodes.runner import PartitionTask
from detflow.shm import share_array
from detflow.sources.readers import ArrayReader

__all__ = ["stage"]

T = TypeVar("T")


def _noop() -> None:
    pass


def stage(item: T) -> tuple[T, Callable[[], None]]:
    """``item`` ready to send to another process, and a callable that frees what it took.

    A :class:`~detflow.nodes.runner.PartitionTask` whose partition reads an array in
    memory (:class:`~detflow.sources.readers.ArrayReader`) gets that partition's pixels
    copied into a new shared-memory segment and a :class:`~detflow.shm.SharedArrayReader` in place
    of its reader. Anything else is returned unchanged, with a release that does
    nothing. Call ``release()`` on the driver once the item's result is back, or the
    item failed or was abandoned; calling it twice is harmless.

    Examples
    --------
    >>> import pickle
    >>> import numpy as np
    >>> from detflow.nodes.runner import PartitionTask
    >>> from detflow.sources.memory import MemorySource
    >>> src = MemorySource(data=np.ones((8, 8, 64, 64), dtype=np.uint16))
    >>> task = PartitionTask(next(src.partitions()), udfs=())
    >>> staged, release = stage(task)
    >>> len(pickle.dumps(staged)) < 2000 < len(pickle.dumps(task))
    True
    >>> int(staged.partition.read().sum())
    262144
    >>> release()   # back to the pool, for the next stage()
    >>> from detflow.shm import trim
    >>> trim()      # unlink the pool
    """
    if not isinstance(item, PartitionTask):
        return item, _noop
    reader = item.partition.reader
    if not isinstance(reader, ArrayReader) or reader.data.size == 0:
        return item, _noop
    shared, release = share_array(reader.data, base=reader.base, total=reader.n_pixels)
    partition = replace(item.partition, reader=shared)
    return replace(item, partition=partition), release
