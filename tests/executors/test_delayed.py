"""The delayed executor: one task per partition, partial results stream (or a tree merge), any scheduler."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import detflow as df
from detflow.errors import ConfigurationError
from detflow.executors.delayed import DelayedExecutor
from detflow.nodes import UDF, StdDevUDF, SumSigUDF, SumUDF


def _data():
    return np.random.default_rng(5).integers(0, 1000, size=(6, 7, 9, 8)).astype(np.uint16)


def test_merges_in_a_tree(monkeypatch) -> None:
    from detflow.nodes import reduce

    calls = []
    original = reduce.combine

    def counting(a, b, ctx):
        calls.append((a.indices, b.indices))
        return original(a, b, ctx)

    monkeypatch.setattr(reduce, "combine", counting)
    data = _data()
    ctx = df.Context(DelayedExecutor("sync", merge="tree"))
    ds = ctx.load("memory", data=data, num_partitions=7)
    total, std, frames = ctx.run_udf(dataset=ds, udf=[SumUDF(), StdDevUDF(), SumSigUDF()])
    # A binary tree over 7 leaves pairs (1,1) three times, then (2,2) and (2,1), then (4,3);
    # a linear chain would merge sizes (1,1), (2,1), (3,1), ..., (6,1).
    sizes = sorted(tuple(sorted((len(a), len(b)), reverse=True)) for a, b in calls)
    assert sizes == [(1, 1), (1, 1), (1, 1), (2, 1), (2, 2), (4, 3)]
    flat = data.reshape(42, 9, 8).astype(np.float64)
    np.testing.assert_allclose(total["intensity"].data, flat.sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std["std"].data, flat.std(axis=0), rtol=1e-9)
    np.testing.assert_array_equal(frames["intensity"].data, data.sum(axis=(2, 3)))


@pytest.mark.parametrize("rows", [slice(0, 1), slice(5, 6), slice(2, 4)])
def test_a_tree_merge_keeps_the_side_that_processed_frames(rows: slice) -> None:
    """With a ROI inside a few partitions, most tree merges pair a group that saw frames with
    one that saw none: the merged result is the first, whichever side it is on."""
    data = _data()
    roi = np.zeros((6, 7), dtype=bool)
    roi[rows, 1:4] = True
    ctx = df.Context(DelayedExecutor("sync", merge="tree"))
    ds = ctx.load("memory", data=data, num_partitions=6)
    total, std, frames = ctx.run_udf(dataset=ds, udf=[SumUDF(), StdDevUDF(), SumSigUDF()], roi=roi)
    picked = data[roi].astype(np.float64)
    np.testing.assert_allclose(total["intensity"].data, picked.sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std["std"].data, picked.std(axis=0), rtol=1e-9, atol=1e-9)
    expected = np.where(roi, data.sum(axis=(2, 3)), 0)
    np.testing.assert_array_equal(np.where(roi, frames["intensity"].data, 0), expected)


def test_processes_scheduler() -> None:
    data = _data()
    ctx = df.Context(DelayedExecutor("processes", cpus=2))
    roi = np.zeros((6, 7), dtype=bool)
    roi[1:5, 2:6] = True
    res = ctx.run_udf(dataset=ctx.load("memory", data=data, num_partitions=3), udf=SumUDF(), roi=roi)
    np.testing.assert_allclose(res["intensity"].data, data[roi].sum(axis=0).astype(np.float64), rtol=1e-6)


def test_with_a_distributed_client_results_come_per_partition() -> None:
    from detflow.executors.dask_ import DaskExecutor

    local = DaskExecutor.make_local(cpus=2)
    try:
        ex = DelayedExecutor(local.client)
        assert ex.reduce_tree is None and ex.remote
        ctx = df.Context(ex)
        data = _data()
        parts = list(ctx.run_udf_iter(dataset=ctx.load("memory", data=data, num_partitions=3), udf=SumSigUDF()))
        assert len(parts) == 3
        np.testing.assert_array_equal(parts[-1].buffers[0]["intensity"].data, data.sum(axis=(2, 3)))
    finally:
        local.close()


def test_make_with_names() -> None:
    with df.Context.make_with("delayed", cpus=2) as ctx:
        assert isinstance(ctx.executor, DelayedExecutor) and ctx.executor.n_workers == 2
    with pytest.raises(ConfigurationError, match="scheduler must be one of sync, synchronous, threads, processes"):
        DelayedExecutor("gpu")


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_partial_results_stream_on_every_local_scheduler(scheduler: str) -> None:
    data = _data()
    with df.Context(DelayedExecutor(scheduler, cpus=2)) as ctx:
        ds = ctx.load("memory", data=data, num_partitions=5)
        parts = list(ctx.run_udf_iter(dataset=ds, udf=SumSigUDF()))
        final = ctx.run_udf(dataset=ds, udf=SumSigUDF())
    assert len(parts) == 5  # one per partition, not one at the end
    assert [p.partitions_done for p in parts] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(parts[-1].buffers[0]["intensity"].data, final["intensity"].data)
    np.testing.assert_array_equal(final["intensity"].data, data.sum(axis=(2, 3)))


#: partition 4 of a gated run waits for the test: (the test's event, whether the wait ran out)
_GATES: dict[str, tuple[threading.Event, list[bool]]] = {}


class _HeldLast(UDF):
    """Each frame's sum; the last partition waits until the test saw a partial result."""

    def __init__(self, gate: str = "") -> None:
        super().__init__(gate=gate)

    def get_result_buffers(self):
        return {"intensity": self.buffer(kind="nav", dtype="float64")}

    def process_tile(self, tile: np.ndarray) -> None:
        if ((self.meta.coordinates[:, 0] == 5) & (self.meta.coordinates[:, 1] == 6)).any():  # the last frame
            release, ran_out = _GATES[self.params.gate]
            ran_out.append(not release.wait(120))  # the deadline only keeps a broken run from hanging
        self.results.intensity[:] += tile.sum(axis=(1, 2))


@pytest.mark.parametrize("scheduler", ["threads"])  # ("sync" runs one partition at a time, in dask's order)
def test_a_partial_result_arrives_while_a_partition_still_runs(scheduler: str) -> None:
    data = _data()
    release, ran_out = _GATES.setdefault(scheduler, (threading.Event(), []))
    try:
        with df.Context(DelayedExecutor(scheduler, cpus=2)) as ctx:
            it = ctx.run_udf_iter(dataset=ctx.load("memory", data=data, num_partitions=5),
                                  udf=_HeldLast(scheduler))
            first = next(it)
            held = not release.is_set() and not ran_out  # partition 4 is still waiting for us
            release.set()
            rest = list(it)
        assert held and first.partitions_done < 5
        assert ran_out and not any(ran_out)
        np.testing.assert_array_equal(rest[-1].buffers[0]["intensity"].data, data.sum(axis=(2, 3)))
    finally:
        release.set()
        _GATES.pop(scheduler)


def _fails_or_hangs(x: int) -> int:
    if x == 0:
        raise KeyError("item 0")
    threading.Event().wait(600)  # hangs: the failure must not wait for it
    return x


def test_a_failed_task_ends_the_map_while_another_hangs() -> None:
    ex = DelayedExecutor("threads", cpus=2)
    with pytest.raises(KeyError, match="item 0"):
        list(ex.map_unordered(_fails_or_hangs, [1, 0]))
