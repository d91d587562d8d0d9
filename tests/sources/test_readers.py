"""File mappings are cached per process, and dropped when the source is closed."""

from __future__ import annotations

import numpy as np

import detflow as df
from detflow.sources import readers


def test_close_unmaps_the_file(tmp_path) -> None:
    path = tmp_path / "m.npy"
    np.save(path, np.arange(2 * 2 * 4 * 4, dtype=np.uint16).reshape(2, 2, 4, 4))
    ds = df.Context.make_with("inline").load("npy", path=path)
    first = next(iter(ds.partitions())).read()
    assert any(k[0] == str(path) for k in readers._MAPS)
    ds.close()
    assert not any(k[0] == str(path) for k in readers._MAPS)
    np.testing.assert_array_equal(first, np.load(path).reshape(4, 4, 4))


def test_rewritten_file_is_mapped_afresh(tmp_path) -> None:
    path = tmp_path / "r.npy"
    np.save(path, np.zeros((2, 2, 4, 4), dtype=np.uint16))
    ctx = df.Context.make_with("inline")
    assert float(ctx.load("npy", path=path).partitions().__next__().read().sum()) == 0
    np.save(path, np.ones((2, 2, 4, 4), dtype=np.uint16))
    assert float(ctx.load("npy", path=path).partitions().__next__().read().sum()) == 64
