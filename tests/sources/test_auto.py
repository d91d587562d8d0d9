"""Auto-detection: magic bytes first, the suffix second, an error that lists what was tried."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import zarr

import detflow as df
from detflow.errors import SourceFormatError, SourceNotFoundError
from detflow.graph import Graph
from detflow.sources.auto import detect_format
from detflow.sources.mib import write_mib

DATA = np.arange(2 * 3 * 8 * 8, dtype=np.uint16).reshape(2, 3, 8, 8)


def make(kind: str, tmp_path, name: str):
    path = tmp_path / name
    if kind == "npy":
        with open(path, "wb") as f:
            np.save(f, DATA)
    elif kind == "hdf5":
        with h5py.File(path, "w") as f:
            f["x"] = DATA
    elif kind == "zarr":
        zarr.create_array(path, shape=DATA.shape, dtype=DATA.dtype)[...] = DATA
    return path


@pytest.mark.parametrize("kind,name", [("npy", "a.npy"), ("npy", "a.dat"), ("hdf5", "a.h5"), ("hdf5", "a.npy"),
                                       ("zarr", "a.zarr"), ("zarr", "store")])
def test_magic_before_suffix(tmp_path, kind, name) -> None:
    path = make(kind, tmp_path, name)
    assert detect_format(path) == kind
    with df.Context.make_with("inline") as ctx:
        ds = ctx.load("auto", path=path)
        assert ds.name == kind and ds.shape.nav == (2, 3)
        np.testing.assert_array_equal(np.concatenate([p.read() for p in ds.partitions()]), DATA.reshape(6, 8, 8))


@pytest.mark.parametrize("given", ["m.hdr", "m.mib"])
def test_mib_by_magic(tmp_path, given) -> None:
    write_mib(tmp_path / "m.hdr", DATA)
    assert detect_format(tmp_path / given) == "mib"


def test_suffix_when_no_magic(tmp_path) -> None:
    (tmp_path / "empty.h5").write_bytes(b"")
    assert detect_format(tmp_path / "empty.h5") == "hdf5"


def test_unknown_lists_what_was_tried(tmp_path) -> None:
    (tmp_path / "x.weird").write_bytes(b"\x00" * 2000)
    tried = (r"x\.weird: cannot tell the file format; tried the contents as: blockfile, dm, empad, hdf5, mib, .*npy.*"
             r"seq.*zarr; suffixes: \.blo \.dm3 \.dm4 \.emd")
    with pytest.raises(SourceFormatError, match=tried):
        detect_format(tmp_path / "x.weird")
    with pytest.raises(SourceNotFoundError):
        detect_format(tmp_path / "missing.npy")


def test_auto_in_a_graph(tmp_path) -> None:
    path = make("npy", tmp_path, "g.bin")
    g = Graph("auto")
    g.source("auto", path=str(path), nav_shape=[3, 2])
    g.partition()
    g.udf("sum", id="total")
    g.udf("sumsig", id="frames")
    res = g.run(executor="inline")
    np.testing.assert_array_equal(res["total"]["intensity"].values, DATA.sum(axis=(0, 1)))
    # the file holds (2, 3) scan positions; the graph's nav_shape reads them as (3, 2)
    frames = res["frames"]["intensity"].values
    assert frames.shape == (3, 2)
    np.testing.assert_array_equal(frames, DATA.reshape(3, 2, 8, 8).sum(axis=(2, 3)))
