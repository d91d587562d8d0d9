"""Export to .npy and zarr: the dataset as loaded, from any source, on every executor."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from detflow.errors import ConfigurationError
from detflow.sources.mib import write_mib

DATA = np.random.default_rng(9).integers(0, 4096, size=(5, 6, 8, 8)).astype(np.uint16)


@pytest.mark.parametrize("name", ["out.npy", "out.zarr"])
def test_round_trip_with_sync_offset(ctx, tmp_path, name) -> None:
    ds = ctx.load("memory", data=DATA, sync_offset=2, num_partitions=4)
    path = ctx.export_dataset(ds, path=tmp_path / name)
    got = np.load(path) if name.endswith(".npy") else zarr.open_array(path, mode="r")[...]
    expected = np.concatenate([DATA.reshape(30, 8, 8)[2:], np.zeros((2, 8, 8), np.uint16)]).reshape(DATA.shape)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, expected)
    assert not list(tmp_path.glob(".*partial"))


def test_from_mib_with_progress(ctx, tmp_path, capsys) -> None:
    write_mib(tmp_path / "s.hdr", DATA, raw=True, frames_per_file=7)
    ds = ctx.load("mib", path=tmp_path / "s.hdr")
    ctx.export_dataset(ds, path=tmp_path / "s.npy", progress=True)
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), DATA)
    assert "30/30" in capsys.readouterr().err


def test_refuses_to_overwrite(ctx, tmp_path) -> None:
    ds = ctx.load("memory", data=DATA)
    (tmp_path / "x.npy").write_bytes(b"old")
    with pytest.raises(ConfigurationError, match=r"x\.npy' exists; pass overwrite=True"):
        ctx.export_dataset(ds, path=tmp_path / "x.npy")
    assert (tmp_path / "x.npy").read_bytes() == b"old"
    ctx.export_dataset(ds, path=tmp_path / "x.npy", overwrite=True)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), DATA)
    with pytest.raises(ConfigurationError, match="'.npy' or '.zarr'"):
        ctx.export_dataset(ds, path=tmp_path / "x.tif")
