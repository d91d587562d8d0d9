"""zarr: arrays and groups written with zarr's own API, v2 and v3, chunk-aligned partitions."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from detflow.errors import ConfigurationError
from detflow.sources.base import PartitionPlan
from detflow.sources.zarr_ import ZarrSource


@pytest.fixture
def data() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 1000, size=(7, 4, 8, 8)).astype(np.uint16)


@pytest.mark.parametrize("fmt", [2, 3])
def test_array_read_and_chunk_aligned(tmp_path, data, fmt) -> None:
    z = zarr.create_array(tmp_path / "a.zarr", shape=data.shape, chunks=(3, 4, 8, 8), dtype=data.dtype,
                          zarr_format=fmt)
    z[...] = data
    src = ZarrSource(tmp_path / "a.zarr")
    assert src.partition_boundaries() == [0, 12, 24]
    parts = list(src.partitions(PartitionPlan(num_partitions=5)))
    assert all(p.frames.start % 12 == 0 for p in parts)
    np.testing.assert_array_equal(np.concatenate([p.read() for p in parts]), data.reshape(28, 8, 8))


def test_group_with_one_array(tmp_path, data) -> None:
    g = zarr.open_group(tmp_path / "g.zarr", mode="w")
    g.create_array("scan/frames", shape=data.shape, chunks=(2, 4, 8, 8), dtype=data.dtype)[...] = data
    g.create_array("scan/mask", shape=(8, 8), dtype=bool)
    src = ZarrSource(tmp_path / "g.zarr")
    assert src.array_path == "scan/frames"
    np.testing.assert_array_equal(np.concatenate([p.read() for p in src.partitions()]), data.reshape(28, 8, 8))


def test_group_with_two_arrays_needs_array_path(tmp_path, data) -> None:
    g = zarr.open_group(tmp_path / "g.zarr", mode="w")
    for name in ("a", "b"):
        g.create_array(name, shape=data.shape, dtype=data.dtype)[...] = data
    with pytest.raises(ConfigurationError, match="give parameter 'array_path'.*a .*b "):
        ZarrSource(tmp_path / "g.zarr")
    assert ZarrSource(tmp_path / "g.zarr", array_path="b").shape.nav == (7, 4)
