"""Recording raw frames to .npy: as a graph sink and as RecordUDF."""

from __future__ import annotations

import numpy as np
import pytest

import detflow as df
from detflow.errors import GraphValidationError
from detflow.nodes import RecordUDF, SumSigUDF


def _data():
    return np.random.default_rng(3).integers(0, 60000, size=(5, 7, 8, 6)).astype(np.uint16)


def test_record_udf_writes_frames_in_nav_order(ctx, tmp_path) -> None:
    data = _data()
    ds = ctx.load("memory", data=data, frames_per_partition=4)
    path = tmp_path / "frames.npy"
    total, _ = ctx.run_udf(dataset=ds, udf=[SumSigUDF(), RecordUDF(filename=path)])
    recorded = np.load(path)
    assert recorded.dtype == data.dtype
    np.testing.assert_array_equal(recorded, data)
    np.testing.assert_array_equal(total["intensity"].data, data.sum(axis=(2, 3)))


def test_record_with_roi_leaves_zeros_outside(ctx, tmp_path) -> None:
    data = _data()
    roi = np.zeros((5, 7), dtype=bool)
    roi[2:4, 1:6] = True
    ds = ctx.load("memory", data=data, num_partitions=3)
    ctx.run_udf(dataset=ds, udf=RecordUDF(filename=tmp_path / "f.npy"), roi=roi)
    recorded = np.load(tmp_path / "f.npy")
    np.testing.assert_array_equal(recorded[roi], data[roi])
    assert (recorded[~roi] == 0).all()


def test_npy_sink_in_a_graph(executor, tmp_path) -> None:
    data = _data()
    g = df.Graph("rec")
    g.source("memory", data=data)
    g.partition(num_partitions=3)
    g.udf("sum", id="s")
    g.sink("npy", inputs=["partition"], id="raw", path=str(tmp_path / "raw.npy"))
    out = g.run(executor=executor)
    np.testing.assert_array_equal(np.load(tmp_path / "raw.npy"), data)
    assert set(out) == {"s"}


def test_existing_file_is_refused(ctx, tmp_path) -> None:
    path = tmp_path / "taken.npy"
    np.save(path, np.zeros(3))
    ds = ctx.load("memory", data=_data())
    with pytest.raises(GraphValidationError, match=r"parameter 'filename': '.*taken\.npy' already exists"):
        ctx.run_udf(dataset=ds, udf=RecordUDF(filename=path))
    np.testing.assert_array_equal(np.load(path), np.zeros(3))
    ctx.run_udf(dataset=ds, udf=RecordUDF(filename=path, overwrite=True))
    np.testing.assert_array_equal(np.load(path), _data())
