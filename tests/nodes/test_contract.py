"""The UDF contract, checked on every executor with small UDFs written here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from detflow.errors import UDFError
from detflow.nodes import UDF
from detflow.sources.base import Source
from detflow.sources.readers import ArrayReader


def _data(nav=(4, 6), sig=(5, 3), dtype="uint16"):
    rng = np.random.default_rng(7)
    return rng.integers(0, 1000, size=(*nav, *sig)).astype(dtype)


class FrameMax(UDF):
    def get_result_buffers(self):
        return {"maxima": self.buffer(kind="nav", dtype="float32")}

    def process_frame(self, frame):
        self.results.maxima[:] = frame.max()


class TileMax(FrameMax):
    def process_tile(self, tile):
        self.results.maxima[:] = tile.reshape(len(tile), -1).max(axis=1)


class PartitionMax(FrameMax):
    def process_partition(self, partition):
        self.results.maxima[:] = partition.reshape(len(partition), -1).max(axis=1)


@pytest.mark.parametrize("cls", [FrameMax, TileMax, PartitionMax])
def test_process_methods_agree(ctx, cls) -> None:
    data = _data()
    ds = ctx.load("memory", data=data, num_partitions=3)
    res = ctx.run_udf(dataset=ds, udf=cls())
    np.testing.assert_array_equal(res["maxima"].data, data.max(axis=(2, 3)))
    assert res["maxima"].data.dtype == np.float32


class Everything(UDF):
    """Every buffer kind and use, task data, pre/postprocess, kwargs as params."""

    def __init__(self, offset=0.0, **kwargs):
        super().__init__(offset=offset, **kwargs)

    def get_result_buffers(self):
        return {
            "framesum": self.buffer(kind="nav", dtype="float64"),
            "coords": self.buffer(kind="nav", extra_shape=(2,), dtype="int64"),
            "sigsum": self.buffer(kind="sig", dtype="float64"),
            "count": self.buffer(kind="single", dtype="int64"),
            "scratch": self.buffer(kind="single", extra_shape=(3,), use="private"),
            "mean": self.buffer(kind="sig", dtype="float64", use="result_only"),
        }

    def get_task_data(self):
        return {"weights": np.full(self.meta.dataset_shape.sig, 2.0)}

    def preprocess(self):
        assert self.results.count.shape == (1,)
        self.results.scratch[0] = 1

    def process_tile(self, tile):
        assert tile.dtype == np.float32  # default preferred dtype
        self.results.framesum[:] = (tile * self.task_data.weights).reshape(len(tile), -1).sum(1)
        self.results.framesum[:] += self.params.offset
        self.results.coords[:] = self.meta.coordinates
        self.results.sigsum[:] += tile.sum(axis=0)
        self.results.count[:] += len(tile)

    def postprocess(self):
        assert self.results.scratch[0] == 1

    def merge(self, dest, src):
        dest.framesum[:] = src.framesum
        dest.coords[:] = src.coords
        dest.sigsum[:] += src.sigsum
        dest.count[:] += src.count

    def get_results(self):
        return {"mean": self.results.sigsum / self.results.count[0]}


@pytest.mark.parametrize("with_roi", [False, True])
def test_buffer_kinds_and_uses(ctx, with_roi: bool) -> None:
    data = _data()
    roi = None
    if with_roi:
        roi = np.zeros((4, 6), dtype=bool)
        roi[1:3, 2:5] = True
        roi[3, 0] = True
    ds = ctx.load("memory", data=data, frames_per_partition=5)
    res = ctx.run_udf(dataset=ds, udf=Everything(offset=1.5), roi=roi)
    assert set(res) == {"framesum", "coords", "sigsum", "count", "mean"}  # private hidden
    sel = np.ones((4, 6), dtype=bool) if roi is None else roi
    expected_fs = np.where(sel, 2.0 * data.sum(axis=(2, 3)) + 1.5, np.nan)
    np.testing.assert_allclose(res["framesum"].data, expected_fs)
    np.testing.assert_array_equal(res["framesum"].raw_data, expected_fs[sel])
    yy, xx = np.mgrid[:4, :6]
    np.testing.assert_array_equal(res["coords"].data[sel], np.stack([yy, xx], -1)[sel])
    assert (res["coords"].data[~sel] == 0).all()  # ints are 0 outside the ROI
    np.testing.assert_allclose(res["sigsum"].data, data[sel].sum(axis=0))
    assert res["count"].data[0] == sel.sum()
    np.testing.assert_allclose(res["mean"].data, data[sel].mean(axis=0))
    np.testing.assert_array_equal(res["framesum"].valid_mask, sel)
    assert np.ma.count_masked(res["framesum"].masked_data) == (~sel).sum()


class NativeSum(UDF):
    def get_result_buffers(self):
        return {"s": self.buffer(kind="nav", dtype="int64")}

    def get_preferred_input_dtype(self):
        return self.USE_NATIVE_DTYPE

    def process_tile(self, tile):
        assert tile.dtype == self.meta.input_dtype == self.meta.dataset_dtype
        self.results.s[:] = tile.reshape(len(tile), -1).sum(axis=1)


class Float64Sum(NativeSum):
    def get_preferred_input_dtype(self):
        return np.float64

    def process_tile(self, tile):
        assert tile.dtype == np.float64 == self.meta.input_dtype
        self.results.s[:] = tile.reshape(len(tile), -1).sum(axis=1)


def test_input_dtypes_in_one_pass(ctx) -> None:
    data = _data(dtype="uint8")
    ds = ctx.load("memory", data=data, num_partitions=2)
    a, b = ctx.run_udf(dataset=ds, udf=[NativeSum(), Float64Sum()])
    expected = data.astype(np.int64).sum(axis=(2, 3))
    np.testing.assert_array_equal(a["s"].data, expected)
    np.testing.assert_array_equal(b["s"].data, expected)


class CountingReads(UDF):
    """Sums frames; counts how often the worker's partitions were read via task data."""

    def get_result_buffers(self):
        return {"s": self.buffer(kind="sig", dtype="float64")}

    def process_tile(self, tile):
        self.results.s[:] += tile.sum(axis=0)

    def merge(self, dest, src):
        dest.s[:] += src.s


@dataclass(frozen=True)
class CountingReader:
    """An in-memory reader that appends the number of pixels of every read to a file,
    so reads are counted in whatever process (thread, worker, cluster node) makes them."""

    inner: ArrayReader
    log: str

    @property
    def dtype(self) -> np.dtype:
        return self.inner.dtype

    @property
    def n_pixels(self) -> int:
        return self.inner.n_pixels

    def read_pixels(self, start: int, stop: int) -> np.ndarray:
        with open(self.log, "a") as f:
            f.write(f"{stop - start}\n")
        return self.inner.read_pixels(start, stop)

    def restrict(self, start: int, stop: int) -> CountingReader:
        return CountingReader(self.inner.restrict(start, stop), self.log)


class CountingSource(Source):
    name = "counting"

    def __init__(self, data: np.ndarray, log: str) -> None:
        self._data, self._log = data, log
        super().__init__()

    def _open(self):
        d = self._data
        return d.shape[:2], d.shape[2:], CountingReader(ArrayReader(d.reshape(-1)), self._log)


def test_many_udfs_share_one_read(ctx, tmp_path) -> None:
    """Three UDFs in one run read each pixel once, not three times, on every executor."""
    data = _data()
    log = tmp_path / "reads.log"
    ds = CountingSource(data, str(log))
    ds.partition_sizing = (None, 3)
    results = ctx.run_udf(dataset=ds, udf=[CountingReads(), TileMax(), CountingReads()])
    pixels = sum(int(line) for line in log.read_text().split())
    assert pixels == data.size
    np.testing.assert_allclose(results[2]["s"].data, data.sum(axis=(0, 1)))


class Explodes(UDF):
    def get_result_buffers(self):
        return {"x": self.buffer(kind="nav")}

    def process_tile(self, tile):
        if self.meta.slice.origin[0] + len(tile) > 12:
            raise ZeroDivisionError("boom at the far end")
        self.results.x[:] = 1


def test_udf_error_keeps_type_and_names_node(ctx) -> None:
    ds = ctx.load("memory", data=_data(), num_partitions=3)
    with pytest.raises(ZeroDivisionError, match="boom at the far end") as info:
        ctx.run_udf(dataset=ds, udf=[FrameMax(), Explodes()])
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "node 'explodes' (Explodes)" in notes
    assert "process_tile on partition" in notes
    assert info.value.node_id == "explodes"


class NoMerge(UDF):
    def get_result_buffers(self):
        return {"s": self.buffer(kind="sig")}

    def process_tile(self, tile):
        self.results.s[:] += tile.sum(axis=0)


def test_sig_buffer_without_merge_is_an_error(ctx) -> None:
    ds = ctx.load("memory", data=_data(), num_partitions=2)
    with pytest.raises(UDFError, match="'sig' buffer 's' but no merge"):
        ctx.run_udf(dataset=ds, udf=NoMerge())


class ForgetsResultOnly(FrameMax):
    def get_result_buffers(self):
        return {**super().get_result_buffers(), "extra": self.buffer(kind="nav", use="result_only")}


def test_missing_result_only_is_an_error(ctx) -> None:
    ds = ctx.load("memory", data=_data())
    with pytest.raises(UDFError, match=r"did not return the result_only buffer\(s\) \['extra'\]"):
        ctx.run_udf(dataset=ds, udf=ForgetsResultOnly())


class Stateful(UDF):
    """Instances are rebuilt from kwargs: attributes set outside __init__ do not travel."""

    def __init__(self, scale=1, **kwargs):
        super().__init__(scale=scale, **kwargs)
        self.secret = "set in __init__"

    def get_result_buffers(self):
        return {"s": self.buffer(kind="nav", dtype="float64")}

    def process_tile(self, tile):
        assert self.secret == "set in __init__"
        self.results.s[:] = self.params.scale * tile.reshape(len(tile), -1).sum(axis=1)


def test_reinstantiated_from_kwargs(ctx) -> None:
    data = _data()
    ds = ctx.load("memory", data=data, num_partitions=2)
    udf = Stateful(scale=3)
    udf.secret = "changed after construction"
    res = ctx.run_udf(dataset=ds, udf=udf)
    np.testing.assert_allclose(res["s"].data, 3 * data.sum(axis=(2, 3)))


def test_run_udf_iter_partial_results(ctx) -> None:
    data = _data()
    ds = ctx.load("memory", data=data, num_partitions=4)
    seen = []
    for part in ctx.run_udf_iter(dataset=ds, udf=TileMax()):
        damage = part.damage.data
        got = part.buffers[0]["maxima"].data
        np.testing.assert_array_equal(got[damage], data.max(axis=(2, 3))[damage])
        seen.append(int(damage.sum()))
    tree = getattr(ctx.executor, "reduce_tree", None) is not None  # delayed: one result, at the end
    assert seen == sorted(seen) and seen[-1] == 24 and len(seen) == (1 if tree else 4)
    assert part.finished


def test_one_dimensional_nav_and_coordinates(ctx) -> None:
    data = _data(nav=(11,))
    ds = ctx.load("memory", data=data, num_partitions=3)
    res = ctx.run_udf(dataset=ds, udf=Everything())
    np.testing.assert_array_equal(res["coords"].data[:, 0], np.arange(11))
