"""The delayed executor: one task per partition, merges in a task tree, any scheduler."""

from __future__ import annotations

import numpy as np
import pytest

import detflow as df
from detflow.errors import ConfigurationError
from detflow.executors.delayed import DelayedExecutor
from detflow.nodes import StdDevUDF, SumSigUDF, SumUDF


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
    ctx = df.Context(DelayedExecutor("sync"))
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
