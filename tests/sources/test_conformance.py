"""What every source must do, checked on every source type (see conftest.BUILDERS)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from detflow.sources.base import PartitionPlan
from tests.sources.conftest import CARRY_DATA


def _data(dtype: str, nav: tuple[int, ...] = (5, 7), sig: tuple[int, ...] = (6, 8)) -> np.ndarray:
    # 8 pixels wide: the narrowest frame every raw MIB depth can pack (R6: 8 per chunk)
    rng = np.random.default_rng(42)
    top = 64 if np.dtype(dtype) == np.uint8 else 200  # uint8: what a 6-bit MIB counter holds
    return (rng.random((*nav, *sig)) * top).astype(dtype)


def _read_all(source, plan: PartitionPlan | None = None) -> np.ndarray:
    parts = list(source.partitions(plan))
    return np.concatenate([p.read() for p in parts]), parts


@pytest.mark.parametrize("dtype", ["uint8", "uint16", ">u2", "uint32", "float32", "int16"])
def test_reads_every_frame_in_nav_order(make_source, dtype: str) -> None:
    data = _data(dtype)
    src = make_source(data)
    assert src.shape.nav == (5, 7) and src.shape.sig == (6, 8)
    assert src.dtype == np.dtype(dtype)
    frames, _ = _read_all(src, PartitionPlan(num_partitions=4))
    np.testing.assert_array_equal(frames, data.reshape(35, 6, 8))


@pytest.mark.parametrize("plan", [PartitionPlan(frames_per_partition=3), PartitionPlan(num_partitions=35),
                                  PartitionPlan(num_partitions=100), PartitionPlan()])
def test_partitions_cover_each_frame_once(make_source, plan: PartitionPlan) -> None:
    src = make_source(_data("uint16"))
    parts = list(src.partitions(plan))
    covered = np.concatenate([np.arange(p.frames.start, p.frames.stop) for p in parts])
    np.testing.assert_array_equal(covered, np.arange(35))
    assert [p.index for p in parts] == list(range(len(parts)))


def test_partitions_pickle_small_and_read_the_same(make_source) -> None:
    data = _data("uint16", nav=(8, 8), sig=(32, 32))
    src = make_source(data)
    parts = list(src.partitions(PartitionPlan(num_partitions=4)))
    for p in parts:
        blob = pickle.dumps(p)
        if make_source.kind not in CARRY_DATA:  # file partitions are recipes: no pixel data
            assert len(blob) < 2000, len(blob)
        elif make_source.kind == "memory":  # their own frames only, not the whole array
            assert len(blob) < data.nbytes / 4 + 2000
        np.testing.assert_array_equal(pickle.loads(blob).read(), p.read())


@pytest.mark.parametrize("offset", [2, -3, 0])
def test_sync_offset(make_source, offset: int) -> None:
    data = _data("uint16")
    flat = data.reshape(35, 6, 8)
    src = make_source(data, sync_offset=offset)
    frames, _ = _read_all(src, PartitionPlan(frames_per_partition=4))
    expected = np.zeros_like(flat)
    if offset >= 0:
        expected[: 35 - offset] = flat[offset:]
    else:
        expected[-offset:] = flat[: 35 + offset]
    np.testing.assert_array_equal(frames, expected)


def test_nav_shape_override(make_source) -> None:
    data = _data("float32")
    src = make_source(data, nav_shape=(7, 5))
    assert src.shape.nav == (7, 5)
    frames, _ = _read_all(src)
    np.testing.assert_array_equal(frames, data.reshape(35, 6, 8))


def test_nav_shape_smaller_than_data(make_source) -> None:
    data = _data("uint8")
    src = make_source(data, nav_shape=(4, 5))
    frames, _ = _read_all(src, PartitionPlan(num_partitions=3))
    np.testing.assert_array_equal(frames, data.reshape(35, 6, 8)[:20])


def test_nav_shape_larger_than_data_is_an_error_unless_allowed(make_source) -> None:
    from detflow.errors import SourceFormatError

    data = _data("uint16")
    with pytest.raises(SourceFormatError, match=r"holds 35 frames .*nav_shape \(6, 7\) needs 42: 7 missing"):
        make_source(data, nav_shape=(6, 7))


def test_allow_short_reads_missing_frames_as_zeros(make_source) -> None:
    data = _data("uint16")
    src = make_source(data, nav_shape=(6, 7), allow_short=True)
    frames, _ = _read_all(src, PartitionPlan(num_partitions=3))
    np.testing.assert_array_equal(frames[:35], data.reshape(35, 6, 8))
    assert not frames[35:].any()


def test_sig_shape_recuts_the_pixel_stream(make_source) -> None:
    data = _data("uint16")
    src = make_source(data, sig_shape=(3, 4), nav_shape=(14, 10))
    assert src.shape.nav == (14, 10) and src.shape.sig == (3, 4)
    frames, _ = _read_all(src, PartitionPlan(num_partitions=3))
    np.testing.assert_array_equal(frames, data.reshape(140, 3, 4))


def test_partition_read_dtype_conversion(make_source) -> None:
    data = _data("uint16")
    src = make_source(data)
    part = next(iter(src.partitions(PartitionPlan(num_partitions=2))))
    got = part.read(dtype=np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, data.reshape(35, 6, 8)[: part.n_frames].astype(np.float32))


def test_one_d_nav(make_source) -> None:
    data = _data("uint32", nav=(9,))
    src = make_source(data)
    assert src.shape.nav == (9,)
    frames, _ = _read_all(src, PartitionPlan(frames_per_partition=2))
    np.testing.assert_array_equal(frames, data)


def test_sum_through_context_matches_numpy(make_source, executor) -> None:
    """A full run over each source type on each executor agrees with numpy."""
    import detflow as df
    from detflow.nodes import UDF

    class FrameSums(UDF):
        def get_result_buffers(self):
            return {"s": self.buffer(kind="nav", dtype="float64")}

        def process_tile(self, tile):
            self.results.s[:] = tile.reshape(len(tile), -1).sum(axis=1)

    data = _data("uint16", nav=(6, 5))
    src = make_source(data, sync_offset=1)
    res = df.Context(executor).run_udf(dataset=src, udf=FrameSums())
    flat = data.reshape(30, -1).sum(axis=1)
    expected = np.append(flat[1:], 0).reshape(6, 5)
    np.testing.assert_array_equal(res["s"].data, expected)
