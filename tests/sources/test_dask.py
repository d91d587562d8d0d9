"""dask arrays: chunk-aligned partitions, computed on the worker, any chunking."""

from __future__ import annotations

import pickle

import dask.array as da
import numpy as np
import zarr

import detflow as df
from detflow.nodes import SumUDF
from detflow.sources.base import PartitionPlan


def test_load_positional_and_sum(ctx) -> None:
    data = np.random.default_rng(2).random((6, 5, 8, 8)).astype(np.float32)
    arr = da.from_array(data, chunks=(2, 5, 4, 8))
    ds = ctx.load("dask", arr)
    assert ds.partition_boundaries() == [0, 10, 20]
    res = ctx.run_udf(dataset=ds, udf=SumUDF())
    np.testing.assert_allclose(res["intensity"].data, data.sum(axis=(0, 1)), rtol=1e-5)


def test_irregular_chunks_and_lazy_graph(ctx) -> None:
    arr = da.arange(9 * 4 * 4, chunks=20, dtype=np.uint16).reshape((9, 4, 4)).rechunk(((2, 3, 4), 4, 4))
    ds = ctx.load("dask", arr * 2)
    expected = (np.arange(9 * 16, dtype=np.uint16) * 2).reshape(9, 4, 4)
    parts = list(ds.partitions(PartitionPlan(frames_per_partition=3)))
    np.testing.assert_array_equal(np.concatenate([p.read() for p in parts]), expected)
    # and computed where the executor runs its tasks
    res = ctx.run_udf(dataset=ds, udf=SumUDF())
    np.testing.assert_allclose(res["intensity"].data, expected.sum(axis=0, dtype=np.float64))


def test_array_from_zarr_pickles_small(tmp_path) -> None:
    # about pickling partitions, which no executor takes part in
    ctx = df.Context.make_with("inline")
    data = np.arange(8 * 8 * 16 * 16, dtype=np.uint16).reshape(8, 8, 16, 16)
    z = zarr.create_array(tmp_path / "z.zarr", shape=data.shape, chunks=(2, 8, 16, 16), dtype=data.dtype)
    z[...] = data
    ds = ctx.load("dask", da.from_zarr(str(tmp_path / "z.zarr")))
    for p in ds.partitions(PartitionPlan(num_partitions=4)):
        assert len(pickle.dumps(p)) < 10_000
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(p)).read(), data.reshape(64, 16, 16)[p.frames])
