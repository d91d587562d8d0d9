"""The zarr sink: labelled stores, written partition by partition, never half overwritten."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

import detflow as df
from detflow.errors import ConfigurationError
from detflow.nodes import UDF


def _data():
    return np.random.default_rng(2).integers(0, 200, size=(6, 5, 12, 10)).astype(np.uint16)


def _graph(data, path, roi=None, **udfs):
    g = df.Graph("zt")
    g.source("memory", data=data)
    g.partition(frames_per_partition=4, roi=roi)
    g.udf("sumsig", id="total")
    g.udf("sum", id="frame")
    g.udf("masks", id="bf", masks=[{"type": "circular", "cx": 5, "cy": 6, "r": 3},
                                   {"type": "rectangular", "x": 0, "y": 0, "width": 4, "height": 2}])
    for node_id, udf in udfs.items():
        g.udf(udf, id=node_id)
    g.sink("zarr", inputs=["total", "frame", "bf", *udfs], id="out", path=str(path))
    return g


@pytest.mark.parametrize("with_roi", [False, True])
def test_store_matches_numpy_and_opens_labelled(executor, tmp_path, with_roi) -> None:
    data = _data()
    roi = None
    if with_roi:
        roi = np.zeros((6, 5), dtype=bool)
        roi[1:4, 2:] = True
    _graph(data, tmp_path / "r.zarr", roi=roi).run(executor=executor)
    ds = xr.open_zarr(tmp_path / "r.zarr")
    sel = np.ones((6, 5), dtype=bool) if roi is None else roi
    expected_total = np.where(sel, data.sum(axis=(2, 3)), np.nan)
    np.testing.assert_allclose(ds["total_intensity"].values, expected_total)
    assert ds["total_intensity"].dims == ("nav_y", "nav_x")
    np.testing.assert_allclose(ds["frame_intensity"].values, data[sel].sum(axis=0), rtol=1e-6)
    assert ds["frame_intensity"].dims == ("sig_y", "sig_x")
    assert ds["bf_intensity"].dims == ("nav_y", "nav_x", "mask")  # as in memory
    assert list(ds["mask"].values) == ["circular_0", "rectangular_1"]
    yy, xx = np.mgrid[:12, :10]
    disk = np.hypot(yy - 6, xx - 5) <= 3
    np.testing.assert_allclose(ds["bf_intensity"].values[..., 0],
                               np.where(sel, (data * disk).sum(axis=(2, 3)), np.nan), rtol=1e-6)
    np.testing.assert_array_equal(ds["valid"].values, sel)
    assert ds.attrs["complete"] is True and ds.attrs["graph"] == "zt"
    # 30 frames, 4 a partition: every partition that holds a selected frame, each listed once
    touched = sorted({int(i) // 4 for i in np.flatnonzero(sel)})
    assert touched == (list(range(8)) if roi is None else [1, 2, 3, 4])
    assert ds.attrs["partitions_total"] == len(touched) and ds.attrs["partitions_done"] == touched
    assert ds["bf_intensity"].attrs["type"] == "masks"
    assert ds["bf_intensity"].attrs["params"]["masks"][0]["r"] == 3


class FailsLate(UDF):
    """Fails on the partition that holds frame 20, after earlier ones were written."""

    def get_result_buffers(self):
        return {"x": self.buffer(kind="nav")}

    def process_tile(self, tile):
        if self.meta.slice.origin[0] <= 20 < self.meta.slice.origin[0] + len(tile):
            raise RuntimeError("detector hiccup")
        self.results.x[:] = 1


def test_killed_run_leaves_a_valid_partial_store(tmp_path) -> None:
    data = _data()
    g = _graph(data, tmp_path / "p.zarr", late=FailsLate())
    with pytest.raises(RuntimeError, match="detector hiccup"):
        g.run(executor="inline")
    ds = xr.open_zarr(tmp_path / "p.zarr", consolidated=False)
    done = ds.attrs["partitions_done"]
    assert ds.attrs["complete"] is False and done == [0, 1, 2, 3, 4]  # frames 0..19, in order inline
    valid = ds["valid"].values.reshape(-1)
    assert valid[:20].all() and not valid[20:].any()
    total = ds["total_intensity"].values.reshape(-1)
    np.testing.assert_allclose(total[:20], data.reshape(30, -1).sum(axis=1)[:20])
    assert np.isnan(total[20:]).all()


def test_existing_store_is_refused_then_swapped_whole(tmp_path) -> None:
    data = _data()
    path = tmp_path / "s.zarr"
    _graph(data, path).run(executor="inline")
    with pytest.raises(ConfigurationError, match=r"s\.zarr' already exists; pass overwrite"):
        _graph(data, path).run(executor="inline")
    # a failing overwrite leaves the old store intact
    g = _graph(data * 2, path, late=FailsLate())
    with pytest.raises(RuntimeError):
        g.run(executor="inline", overwrite=True)
    old = xr.open_zarr(path)
    np.testing.assert_allclose(old["total_intensity"].values, data.sum(axis=(2, 3)))
    # a completed overwrite replaces it
    g = _graph(data * 2, path)
    g.run(executor="inline", overwrite=True)
    new = xr.open_zarr(path)
    np.testing.assert_allclose(new["total_intensity"].values, 2 * data.sum(axis=(2, 3)))
    assert not (tmp_path / "s.zarr.partial").exists()


def test_written_by_zarr_v3(tmp_path) -> None:
    _graph(_data(), tmp_path / "v.zarr").run(executor="inline")
    group = zarr.open_group(tmp_path / "v.zarr", mode="r")
    assert group.metadata.zarr_format == 3
    assert group["total_intensity"].metadata.dimension_names == ("nav_y", "nav_x")


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_second_run_into_a_store_being_written_is_refused_naming_it(tmp_path, overwrite) -> None:
    data = _data()
    path = tmp_path / "c.zarr"
    if overwrite:
        _graph(data, path).run(executor="inline")
    first = _graph(data, path).run_iter(executor="inline", overwrite=overwrite)
    next(first)  # the first run holds the store now, one partition written
    with pytest.raises(ConfigurationError, match=rf"{path.name}'.*another run is writing it") as err:
        _graph(data * 2, path).run(executor="inline", overwrite=overwrite)
    assert str(path) in str(err.value)
    for _ in first:  # the first run is untouched by the second and finishes
        pass
    ds = xr.open_zarr(path)
    assert ds.attrs["complete"] is True
    np.testing.assert_allclose(ds["total_intensity"].values, data.sum(axis=(2, 3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr"]  # no lock, no partial left
    _graph(data, path).run(executor="inline", overwrite=True)  # and the next run may write it


def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path) -> None:
    import json
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    path = tmp_path / "d.zarr"
    (tmp_path / "d.zarr.lock").write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))
    _graph(_data(), path).run(executor="inline")
    assert xr.open_zarr(path).attrs["complete"] is True and not (tmp_path / "d.zarr.lock").exists()


@pytest.mark.parametrize("where", ["a_file/x.zarr", "a_file", "missing/deeper/x.zarr"])
def test_sink_paths_are_checked_at_validation(tmp_path, where) -> None:
    (tmp_path / "a_file").write_text("not a store")
    path = tmp_path / where
    g = _graph(_data(), path)
    with pytest.raises(ConfigurationError, match=str(path if where != "a_file/x.zarr" else tmp_path / "a_file")):
        g.validate().close()
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ConfigurationError):
        g.run(executor="inline")
    assert not (tmp_path / "missing").exists()
