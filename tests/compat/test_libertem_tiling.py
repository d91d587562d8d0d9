"""LiberTEM 0.16 tiling (issue 15, item 7): tile shapes, tiling preferences, sig-cut tiles.

A LiberTEM-style tile UDF records every tile it gets (depth, ``sig_slice``, scheme index)
and writes the tile's pixels into a per-frame buffer at ``self.meta.sig_slice``: the
frames reassembled from the pieces must equal the data, and the tile shapes must be
the ones LiberTEM 0.16 gives for the same preferences. Those shapes were read off
LiberTEM 0.16 itself (memory dataset, inline executor, 2 partitions of 6 frames):

* ``tileshape=(4, 2, 2)`` on 4 x 3 frames: tiles ``(4, 2, 2)`` and ``(4, 2, 1)`` at sig
  origins (0, 0), (0, 2), (2, 0), (2, 2), the last tile of a partition shallower;
* ``{"depth": 4, "total_size": 64 KiB}`` on 256 x 64 uint16 frames read as float32:
  ``(2, 128, 64)`` (no tile below 16 KiB of raw data, so at most two frames fit);
* ``{"depth": 8, "total_size": 48 KiB}`` on 128 x 96 float32 frames: ``(3, 42, 96)``,
  four signal tiles, the last of 2 rows;
* ``{"depth": 3}`` alone (no size limit): the whole partition, ``(6, 64, 64)``;
* ``{"depth": 2, "total_size": 24}`` on 4 x 3 frames: ``(1, 4, 3)``, whole frames (too
  small to cut).
"""

from __future__ import annotations

import numpy as np
import pytest

# isort: off
import detflow.compat.libertem  # noqa: F401
from libertem.udf.base import UDF
from libertem.udf.sum import SumUDF
# isort: on


class TileRecorderUDF(UDF):
    """Reassembles frames from tiles and records the tiles' shapes and signal slices."""

    def __init__(self, prefs=None):
        super().__init__(prefs=prefs)

    def get_tiling_preferences(self):
        return self.params.prefs if self.params.prefs is not None else super().get_tiling_preferences()

    def get_result_buffers(self):
        sig = tuple(self.meta.dataset_shape.sig)
        return {
            "frames": self.buffer(kind="nav", extra_shape=sig, dtype="float64"),
            "hits": self.buffer(kind="sig", dtype="int64"),
            "depth": self.buffer(kind="single", dtype="int64"),
            "pieces": self.buffer(kind="single", extra_shape=(16, 5), dtype="int64"),
        }

    def process_tile(self, tile):
        sl = self.meta.sig_slice
        assert tile.shape == (self.meta.slice.shape[0], *sl.shape)
        assert self.meta.tiling_scheme[self.meta.tiling_scheme_idx] == sl
        assert self.results.hits.shape == tuple(sl.shape)  # the sig buffer's view is the tile's
        self.results.frames[(slice(None), *sl.get())] = tile
        self.results.hits[:] += 1
        self.results.depth[:] = max(self.results.depth[0], tile.shape[0])
        row = self.meta.tiling_scheme_idx
        self.results.pieces[row] = (1, *sl.origin, *sl.shape)

    def merge(self, dest, src):
        dest.frames[:] = src.frames
        dest.hits[:] += src.hits
        dest.depth[:] = np.maximum(dest.depth, src.depth)
        dest.pieces[:] = np.maximum(dest.pieces, src.pieces)


def _pieces(res):
    p = res["pieces"].data
    return [tuple(int(v) for v in row[1:]) for row in p if row[0]]


@pytest.mark.parametrize("with_roi", [False, True])
def test_dataset_tileshape_cuts_tiles_in_the_signal(ctx, with_roi) -> None:
    data = np.random.default_rng(2).integers(0, 900, size=(3, 4, 4, 3)).astype("uint16")
    ds = ctx.load("memory", data=data, tileshape=(4, 2, 2), num_partitions=2)
    roi = None
    if with_roi:
        roi = np.zeros((3, 4), bool)
        roi[0, 1:] = roi[2, :2] = True
    rec, total = ctx.run_udf(dataset=ds, udf=[TileRecorderUDF(), SumUDF()], roi=roi)
    assert _pieces(rec) == [(0, 0, 2, 2), (0, 2, 2, 1), (2, 0, 2, 2), (2, 2, 2, 1)]
    # LiberTEM counts the depth in ROI frames; detflow reads 4 frames, then drops those outside
    assert rec["depth"].data[0] == 4 if roi is None else 1 <= rec["depth"].data[0] <= 4
    sel = np.ones((3, 4), bool) if roi is None else roi
    np.testing.assert_array_equal(rec["frames"].data[sel], data[sel])  # every pixel arrived, in place
    np.testing.assert_array_equal(rec["hits"].data, rec["hits"].data.flat[0])  # each once per depth step
    np.testing.assert_allclose(total["intensity"].data, data[sel].sum(axis=0))


@pytest.mark.parametrize(("sig", "dtype", "prefs", "depth", "pieces"), [
    ((256, 64), "uint16", {"depth": 4, "total_size": 64 * 1024}, 2, [(0, 0, 128, 64), (128, 0, 128, 64)]),
    ((128, 96), "float32", {"depth": 8, "total_size": 48 * 1024}, 3,
     [(0, 0, 42, 96), (42, 0, 42, 96), (84, 0, 42, 96), (126, 0, 2, 96)]),
    ((64, 64), "uint16", {"depth": 3}, 6, [(0, 0, 64, 64)]),
    ((4, 3), "uint16", {"depth": 2, "total_size": 24}, 1, [(0, 0, 4, 3)]),
])
def test_tiling_preferences_give_libertems_tiles(ctx, sig, dtype, prefs, depth, pieces) -> None:
    data = np.random.default_rng(3).integers(0, 900, size=(3, 4, *sig)).astype(dtype)
    ds = ctx.load("memory", data=data, num_partitions=2)
    rec, total = ctx.run_udf(dataset=ds, udf=[TileRecorderUDF(prefs), SumUDF()])
    assert rec["depth"].data[0] == depth
    assert _pieces(rec) == pieces
    np.testing.assert_array_equal(rec["frames"].data, data)
    np.testing.assert_allclose(total["intensity"].data, data.sum(axis=(0, 1), dtype=np.float64))


class FrameShapeUDF(UDF):
    def get_result_buffers(self):
        return {"ok": self.buffer(kind="nav", dtype="bool")}

    def process_frame(self, frame):
        self.results.ok[:] = frame.shape == tuple(self.meta.dataset_shape.sig) and \
            self.meta.sig_slice.shape == self.meta.dataset_shape.sig


def test_frame_udfs_keep_whole_frames_next_to_cut_tiles(ctx) -> None:
    """LiberTEM refuses a frame UDF on a dataset whose tile shape cuts the signal; detflow
    gives it whole frames and cuts only the tile UDF's tiles."""
    data = np.random.default_rng(4).integers(0, 900, size=(2, 3, 4, 3)).astype("float32")
    ds = ctx.load("memory", data=data, tileshape=(2, 2, 3), num_partitions=2)
    frames, rec = ctx.run_udf(dataset=ds, udf=[FrameShapeUDF(), TileRecorderUDF()])
    assert frames["ok"].data.all()
    assert _pieces(rec) == [(0, 0, 2, 3), (2, 0, 2, 3)]
    np.testing.assert_array_equal(rec["frames"].data, data)
