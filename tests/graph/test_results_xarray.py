"""Results as xarray: the same dims, coords and attributes from ``g.run()``,
``run_udf(...).to_xarray()`` and a zarr store opened independently with xarray."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr

import detflow as df
from detflow.nodes import ApplyMasksUDF, CoMUDF, StdDevUDF, SumUDF

MASKS = [{"type": "circular", "cx": 5, "cy": 6, "r": 3, "name": "bf"},
         {"type": "rectangular", "x": 0, "y": 0, "width": 4, "height": 2, "name": "corner"}]


def _data() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 100, size=(4, 3, 12, 10)).astype(np.uint16)


def _graph(path: str, store: str, **sink_params) -> df.Graph:
    g = df.Graph("xr")
    g.source("npy", path=path)
    g.partition(frames_per_partition=5)
    g.udf("com", id="com")
    g.udf("masks", id="bf", masks=MASKS)
    g.udf("sum", id="frame")
    g.udf("stddev", id="std")
    g.sink("zarr", inputs=["com", "bf", "frame", "std"], id="out", path=store, **sink_params)
    return g


@pytest.fixture
def scan(tmp_path, monkeypatch) -> tuple[np.ndarray, str]:
    data = _data()
    np.save(tmp_path / "scan.npy", data)
    monkeypatch.chdir(tmp_path)
    return data, "scan.npy"  # relative on purpose: stores must record it absolute


def test_same_dims_coords_and_attrs_in_memory_and_in_the_store(scan, tmp_path) -> None:
    data, rel = scan
    results = _graph(rel, "out.zarr").run(executor="inline")
    store = xr.open_zarr(tmp_path / "out.zarr")
    with df.Context.make_with("inline") as ctx:
        ds = ctx.load("npy", path=rel)
        com, bf, frame, std = ctx.run_udf(dataset=ds, udf=[CoMUDF(), ApplyMasksUDF(masks=MASKS), SumUDF(),
                                                           StdDevUDF()])
    from_udf = {"com": com.to_xarray(), "bf": bf.to_xarray(), "frame": frame.to_xarray(), "std": std.to_xarray()}
    for node in ("com", "bf", "frame", "std"):
        for name, var in results[node].data_vars.items():
            stored = store[f"{node}_{name}"]
            assert var.dims == stored.dims == from_udf[node][name].dims, (node, name)
            for dim in var.dims:
                assert list(var[dim].values) == list(stored[dim].values) == list(from_udf[node][name][dim].values)
            for key in ("units", "long_name"):
                assert var.attrs.get(key) == stored.attrs.get(key) == from_udf[node][name].attrs.get(key)
    raw_com = results["com"]["raw_com"]
    assert raw_com.dims == ("nav_y", "nav_x", "yx")
    assert list(raw_com["yx"].values) == ["y", "x"]
    assert raw_com.attrs["units"] == "px" and raw_com.attrs["long_name"]
    assert list(store["bf_intensity"]["mask"].values) == ["bf", "corner"]
    assert store["bf_intensity"].dims == ("nav_y", "nav_x", "mask")
    np.testing.assert_array_equal(store["nav_y"].values, np.arange(4))
    np.testing.assert_array_equal(store["nav_x"].values, np.arange(3))
    np.testing.assert_array_equal(store["sig_x"].values, np.arange(10))
    assert store["nav_y"].dtype.kind == "i" and results["frame"]["sig_y"].dtype.kind == "i"
    assert store["frame_intensity"].attrs["units"] == "counts"
    np.testing.assert_allclose(store["frame_intensity"].values, data.sum(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(from_udf["frame"]["intensity"].values, data.sum(axis=(0, 1)), rtol=1e-6)
    yy, xx = np.mgrid[:12, :10]
    disk = np.hypot(yy - 6, xx - 5) <= 3
    np.testing.assert_allclose(store["bf_intensity"].sel(mask="bf").values, (data * disk).sum(axis=(2, 3)),
                               rtol=1e-6)
    absolute = os.path.join(str(tmp_path), "scan.npy")
    assert store.attrs["source"] == absolute
    assert results["frame"].attrs["source"] == absolute
    assert from_udf["frame"].attrs["source"] == absolute


def test_internal_accumulators_only_when_asked_for(scan, tmp_path) -> None:
    data, rel = scan
    _graph(rel, "lean.zarr").run(executor="inline")
    lean = xr.open_zarr(tmp_path / "lean.zarr")
    assert "std_std" in lean and "std_varsum" not in lean and "std_num_frames" not in lean
    np.testing.assert_allclose(lean["std_std"].values, data.std(axis=(0, 1)), rtol=1e-9)
    _graph(rel, "full.zarr", internal=True).run(executor="inline")
    full = xr.open_zarr(tmp_path / "full.zarr")
    assert int(full["std_num_frames"].values[0]) == 12
    np.testing.assert_allclose(full["std_varsum"].values, data.var(axis=(0, 1)) * 12, rtol=1e-9)
    with df.Context.make_with("inline") as ctx:
        res = ctx.run_udf(dataset=ctx.load("npy", path=rel), udf=StdDevUDF())
    assert "varsum" in res and "varsum" not in res.to_xarray()  # LiberTEM's dict keeps them
    assert "varsum" in res.to_xarray(internal=True)


def test_two_nodes_whose_extra_dims_differ_keep_apart_in_one_store(scan, tmp_path) -> None:
    """Two mask nodes with different mask counts cannot share one ``mask`` dim in a store."""
    _, rel = scan
    g = df.Graph("two")
    g.source("npy", path=rel)
    g.partition()
    g.udf("masks", id="a", masks=MASKS)
    g.udf("masks", id="b", masks=MASKS[:1])
    g.sink("zarr", inputs=["a", "b"], id="out", path="two.zarr")
    g.run(executor="inline")
    store = xr.open_zarr(tmp_path / "two.zarr")
    assert store["a_intensity"].shape[-1] == 2 and store["b_intensity"].shape[-1] == 1
    assert store["a_intensity"].dims == ("nav_y", "nav_x", "mask")  # the first keeps the name
    assert store["b_intensity"].dims == ("nav_y", "nav_x", "b_mask")
    assert list(store["mask"].values) == ["bf", "corner"] and list(store["b_mask"].values) == ["bf"]
