"""The shared-memory transport: staged tasks pickle small, read the same, and clean up."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from detflow import shm
from detflow.executors.staging import stage
from detflow.nodes.runner import PartitionTask
from detflow.shm import SharedArrayReader, live_segments, pooled_segments, release_all, trim
from detflow.sources.memory import MemorySource
from detflow.sources.npy import NpySource


def _segments() -> list[str]:
    prefix = f"detflow_{os.getpid()}_"
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))


def _tasks(data: np.ndarray, **kw) -> list[PartitionTask]:
    src = MemorySource(data=data, **kw)
    return [PartitionTask(p, udfs=()) for p in src.partitions()]


def test_memory_partition_travels_by_name() -> None:
    trim()  # the pool is per process: start from an empty one, whatever ran before
    data = np.arange(4 * 4 * 32 * 32, dtype=np.uint16).reshape(4, 4, 32, 32)
    (task,) = _tasks(data)
    staged, release = stage(task)
    try:
        assert isinstance(staged.partition.reader, SharedArrayReader)
        assert len(pickle.dumps(task)) > data.nbytes
        assert len(pickle.dumps(staged)) < 2000
        copy = pickle.loads(pickle.dumps(staged))
        np.testing.assert_array_equal(copy.partition.read(), data.reshape(16, 32, 32))
        assert staged.partition.reader.name in live_segments()
    finally:
        release()
    release()  # twice is harmless
    assert not live_segments()
    assert _segments() == pooled_segments() == [staged.partition.reader.name]
    trim()
    assert not _segments() and not pooled_segments()


def test_released_segments_are_reused_once() -> None:
    data = np.arange(2 * 2 * 16 * 16, dtype=np.uint16).reshape(2, 2, 16, 16)
    (task,) = _tasks(data)
    first, release_first = stage(task)
    release_first()
    second, release_second = stage(task)
    assert second.partition.reader.name == first.partition.reader.name  # no new segment
    release_first()  # a stale release must not free the segment the second item uses
    assert live_segments() == [second.partition.reader.name]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(second)).partition.read(), data.reshape(4, 16, 16))
    release_second()
    trim()


def test_pool_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(shm, "POOL_SEGMENTS", 1)
    data = np.ones((2, 2, 8, 8), dtype=np.uint8)
    staged = [stage(t) for t in _tasks(data) * 3]
    for _, release in staged:
        release()
    assert len(pooled_segments()) == 1 and len(_segments()) == 1
    monkeypatch.setenv("DETFLOW_SHM_POOL_BYTES", "0")
    _, release = stage(_tasks(data)[0])
    release()
    assert not pooled_segments() and not _segments()


def test_partitions_keep_their_offsets() -> None:
    data = np.random.default_rng(1).random((3, 5, 8, 8)).astype(np.float32)
    for task in _tasks(data, sync_offset=2):
        staged, release = stage(task)
        try:
            np.testing.assert_array_equal(pickle.loads(pickle.dumps(staged)).partition.read(), task.partition.read())
        finally:
            release()


def test_other_items_pass_through(tmp_path) -> None:
    path = tmp_path / "d.npy"
    np.save(path, np.ones((2, 2, 4, 4), dtype=np.uint8))
    task = PartitionTask(next(NpySource(path=path).partitions()), udfs=())
    for item in (3, "x", task):
        same, release = stage(item)
        assert same is item
        release()
    assert not live_segments()


def test_view_outlives_release() -> None:
    """A worker's view stays valid after the driver unlinked the segment."""
    data = np.arange(64, dtype=np.int32).reshape(1, 4, 4, 4)
    (task,) = _tasks(data)
    staged, release = stage(task)
    view = pickle.loads(pickle.dumps(staged)).partition.read()
    release()
    trim()
    assert not _segments()
    np.testing.assert_array_equal(view, data.reshape(4, 4, 4))
    with pytest.raises(FileNotFoundError, match="is gone: the driver released it"):
        pickle.loads(pickle.dumps(staged)).partition.read()


def test_reader_range_and_release_all() -> None:
    data = np.arange(2 * 2 * 4 * 4, dtype=np.uint8).reshape(2, 2, 4, 4)
    staged, _ = stage(_tasks(data)[0])
    reader = staged.partition.reader
    assert reader.restrict(0, 4) is reader
    assert reader.n_pixels == data.size and reader.dtype == np.uint8
    with pytest.raises(IndexError, match="outside this reader's range"):
        reader.read_pixels(0, data.size + 1)
    release_all()
    assert not live_segments() and not _segments()


def test_reader_keeps_the_segments_it_mapped_and_forgets_unlinked_ones() -> None:
    """A pooled segment read again maps nothing new (its pages are not faulted in twice),
    shows what was written into it since, and is forgotten when this process unlinks it."""
    data = np.arange(4096, dtype=np.uint16)
    reader, release = shm.share_array(data)
    first = shm.attach(reader.name, reader.dtype, reader.count)
    again = shm.attach(reader.name, reader.dtype, reader.count)
    assert np.shares_memory(first, again)
    np.frombuffer(shm._LIVE[reader.name].buf, dtype=np.uint16, count=4096)[:] = 7  # the next item, say
    assert int(again.sum()) == 7 * 4096
    del first, again
    release()
    shm.trim()
    assert reader.name not in shm._MAPPED


def test_trim_with_a_view_still_alive_unlinks_and_closes_later() -> None:
    """A view of a pooled segment that outlives its run (a kept traceback holds one) must not make
    closing the executor fail: the name goes at once, the memory when the view goes."""
    trim()
    (task,) = _tasks(np.arange(2 * 2 * 16 * 16, dtype=np.uint16).reshape(2, 2, 16, 16))
    staged, release = stage(task)
    name = staged.partition.reader.name
    view = np.frombuffer(shm._LIVE[name].buf, np.uint8)  # as a traceback's frame would keep it
    release()
    trim()  # before: BufferError "cannot close exported pointers exist"
    assert name not in _segments() and not pooled_segments()
    assert [s.name for s in shm._LINGERING] == [name]
    del view
    trim()
    assert not shm._LINGERING
