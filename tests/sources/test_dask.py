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


def test_partition_pickles_only_its_own_chunks() -> None:
    """A partition of ``da.from_array(ndarray)`` carries its own rows, not the whole array."""
    from detflow.sources.dask_ import DaskSource

    data = np.arange(8 * 4 * 32 * 32, dtype=np.uint16).reshape(8, 4, 32, 32)
    src = DaskSource(da.from_array(data, chunks=(2, 4, 32, 32)))
    parts = list(src.partitions(PartitionPlan(num_partitions=4)))
    assert len(parts) == 4
    for p in parts:
        size = len(pickle.dumps(p))
        assert size < data.nbytes / 2, f"partition {p.index} pickles to {size} bytes of {data.nbytes}"
        got = pickle.loads(pickle.dumps(p)).read()
        np.testing.assert_array_equal(got, data.reshape(32, 32, 32)[p.frames])


def test_restricted_reader_reads_whole_blocks_of_unaligned_partitions() -> None:
    """Partitions that do not start on a chunk still read right (tiles use the block cache)."""
    from detflow.sources.dask_ import DaskSource

    data = np.random.default_rng(5).integers(0, 100, (9, 3, 4, 4)).astype(np.uint16)
    src = DaskSource(da.from_array(data, chunks=(2, 3, 4, 4)), sync_offset=2)
    flat = data.reshape(27, 4, 4)
    for p in src.partitions(PartitionPlan(frames_per_partition=5)):
        q = pickle.loads(pickle.dumps(p))
        want = np.zeros((p.n_frames, 4, 4), dtype=np.uint16)
        lo, hi = p.frames.start + 2, min(p.frames.stop + 2, 27)
        want[: hi - lo] = flat[lo:hi]
        np.testing.assert_array_equal(q.read(), want)
        np.testing.assert_array_equal(q.read_frames(1, 3), want[1:3])
