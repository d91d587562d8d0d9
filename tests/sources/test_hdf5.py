"""HDF5: dataset discovery, chunk-aligned partitions (each chunk decoded once), DECTRIS-style
bitshuffle/LZ4 files behind an external link, files with a user block."""

from __future__ import annotations

import h5py
import hdf5plugin
import numpy as np
import pytest

import detflow as df
from detflow.errors import ConfigurationError
from detflow.nodes import SumUDF
from detflow.sources.base import PartitionPlan
from detflow.sources.chunked import clear_block_cache
from detflow.sources.hdf5_ import HDF5Reader, HDF5Source


@pytest.fixture
def data() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 1000, size=(6, 5, 16, 16)).astype(np.uint16)


def write(path, data, **kw) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=data, **kw)


def test_partitions_follow_the_chunks(tmp_path, data) -> None:
    write(tmp_path / "c.h5", data, chunks=(2, 5, 16, 16), compression="gzip")
    src = HDF5Source(tmp_path / "c.h5")
    assert src.ds_path == "/entry/data/data" and src.partition_boundaries() == [0, 10, 20]
    parts = list(src.partitions(PartitionPlan(frames_per_partition=7)))
    assert [(p.frames.start, p.frames.stop) for p in parts] == [(0, 10), (10, 20), (20, 30)]
    np.testing.assert_array_equal(np.concatenate([p.read() for p in parts]), data.reshape(30, 16, 16))


def test_each_chunk_is_read_once(tmp_path, data, monkeypatch) -> None:
    """Tiles smaller than a chunk band do not decode the band again."""
    write(tmp_path / "c.h5", data, chunks=(3, 5, 16, 16), compression="gzip")
    reads: list[tuple[slice, ...]] = []
    original = HDF5Reader._read_slab

    def counting(self, sel):
        reads.append(sel)
        return original(self, sel)

    monkeypatch.setattr(HDF5Reader, "_read_slab", counting)
    clear_block_cache()
    src = HDF5Source(tmp_path / "c.h5")
    for p in src.partitions(PartitionPlan(num_partitions=2)):
        tiles = [p.read_frames(t, min(t + 4, p.n_frames)) for t in range(0, p.n_frames, 4)]
        np.testing.assert_array_equal(np.concatenate(tiles), data.reshape(30, 16, 16)[p.frames])
    rows = sorted(r for sel in reads for r in range(*sel[0].indices(6)))
    assert rows == list(range(6))  # every scan row, hence every chunk, read exactly once


def test_contiguous_dataset_and_sum(tmp_path, data, ctx) -> None:
    write(tmp_path / "plain.h5", data)
    ds = ctx.load("hdf5", path=tmp_path / "plain.h5", ds_path="entry/data/data")
    assert ds.partition_boundaries() is None
    res = ctx.run_udf(dataset=ds, udf=SumUDF())
    np.testing.assert_array_equal(res["intensity"].data, data.sum(axis=(0, 1)))


def test_dectris_bitshuffle_lz4_behind_external_link(tmp_path) -> None:
    frames = np.random.default_rng(1).integers(0, 2**12, size=(12, 32, 32)).astype(np.uint32)
    with h5py.File(tmp_path / "scan_data_000001.h5", "w") as f:
        f.create_dataset("entry/data/data", data=frames, chunks=(1, 32, 32),
                         **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
    with h5py.File(tmp_path / "scan_master.h5", "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink("scan_data_000001.h5", "/entry/data/data")
        f.create_dataset("entry/instrument/detector/x_pixel_size", data=7.5e-5)
    with df.Context.make_with("inline") as ctx:
        ds = ctx.load("auto", path=tmp_path / "scan_master.h5", nav_shape=(3, 4))
        assert ds.name == "hdf5" and ds.ds_path == "/entry/data/data_000001"
        assert ds.dtype == np.uint32
        np.testing.assert_array_equal(ctx.run_udf(dataset=ds, udf=SumUDF())["intensity"].data, frames.sum(axis=0))


def test_several_candidate_datasets(tmp_path, data) -> None:
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = data
        f["b/c"] = data[0]
    with pytest.raises(ConfigurationError, match=r"give parameter 'ds_path'.*/a \(6, 5, 16, 16\).*/b/c \(5, 16, 16\)"):
        HDF5Source(tmp_path / "two.h5")
    assert HDF5Source(tmp_path / "two.h5", ds_path="/b/c").shape.nav == (5,)
    with pytest.raises(ConfigurationError, match="no dataset '/zzz'"):
        HDF5Source(tmp_path / "two.h5", ds_path="/zzz")


def test_user_block_is_detected_by_auto(tmp_path, data) -> None:
    path = tmp_path / "withblock.bin"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["d"] = data
    with df.Context.make_with("inline") as ctx:
        ds = ctx.load("auto", path=path)
        assert ds.name == "hdf5"
        total = ctx.run_udf(dataset=ds, udf=SumUDF())["intensity"].data
    np.testing.assert_array_equal(total, data.sum(axis=(0, 1)))
