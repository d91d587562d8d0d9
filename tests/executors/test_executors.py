"""Executors: results come back complete, errors come back with their type."""

from __future__ import annotations

import threading

import pytest

from detflow.errors import ConfigurationError, UnknownNameError
from detflow.executors.base import make_executor


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise KeyError(f"item {x}")
    return x


def test_map_unordered_returns_every_result(executor) -> None:
    assert sorted(executor.map_unordered(_square, range(20))) == [i * i for i in range(20)]


def test_errors_keep_their_type(executor) -> None:
    with pytest.raises(KeyError, match="item 3"):
        list(executor.map_unordered(_fail_on_three, range(6)))


def test_threads_bound_items_in_flight() -> None:
    ex = make_executor("threads", cpus=2)
    drawn = []
    release = threading.Event()

    def gated(i: int) -> int:
        if i != 0:  # only the first item can finish until the test has counted
            assert release.wait(timeout=60), "test never released the workers"
        return i

    def items():
        for i in range(50):
            drawn.append(i)
            yield i

    try:
        results = ex.map_unordered(gated, items())
        first = next(results)
        # 2 * cpus drawn before the first result; without a limit all 50 would be drawn
        assert first == 0 and len(drawn) <= 5, drawn
        release.set()
        assert sorted([first, *results]) == list(range(50))
    finally:
        release.set()
        ex.close()


def test_unknown_executor_lists_known_names() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown executor 'gpu-cluster'; known executors: .*inline.*threads"):
        make_executor("gpu-cluster")


def test_bad_cpus() -> None:
    with pytest.raises(ConfigurationError, match="cpus must be an integer >= 1; got 0"):
        make_executor("threads", cpus=0)


def test_inline_debug_catches_unpicklable_items() -> None:
    import pickle

    ex = make_executor("inline", debug=True)
    with pytest.raises((pickle.PicklingError, TypeError)):
        list(ex.map_unordered(_square, [threading.Lock()]))


def test_partial_results_stream_partition_by_partition(ctx) -> None:
    import numpy as np

    from detflow.nodes import SumSigUDF

    data = np.random.default_rng(8).integers(0, 1000, size=(5, 6, 8, 8)).astype(np.uint16)
    ds = ctx.load("memory", data=data, num_partitions=5)
    parts = list(ctx.run_udf_iter(dataset=ds, udf=SumSigUDF()))
    final = ctx.run_udf(dataset=ds, udf=SumSigUDF())
    assert len(parts) == 5  # one partial result per partition, not one at the end
    assert [p.partitions_done for p in parts] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(parts[-1].buffers[0]["intensity"].data, final["intensity"].data)
    np.testing.assert_array_equal(final["intensity"].data, data.sum(axis=(2, 3)))
