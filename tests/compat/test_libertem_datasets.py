"""LiberTEM 0.16 datasets (issue 15, item 11): ``ds.roi`` and what ``sync_offset`` leaves out.

LiberTEM's ``DataSet.get_sync_offset_info`` names the frames a ``sync_offset`` shifts out
of the scan ("frames_inserted_start" / "frames_inserted_end"); its partitions read only
the frames the data holds, so those positions are never given to a UDF: their ``nav``
results keep the buffer's zeros, and a frame counter counts only the frames that exist
(LiberTEM 0.16 on a 6 x 5 memory dataset with ``sync_offset=3`` or ``-3``: 27 frames,
the three positions at the end, or at the start, 0).
"""

from __future__ import annotations

import numpy as np
import pytest

# isort: off
import detflow.compat.libertem  # noqa: F401
from libertem.udf.base import UDF
from libertem.udf.sum import SumUDF
# isort: on


class CountUDF(UDF):
    """Counts the frames it is given and marks each position it saw (frame sum + 1)."""

    def __init__(self, method="frame"):
        super().__init__(method=method)

    def get_result_buffers(self):
        return {"seen": self.buffer(kind="nav", dtype="float64"),
                "count": self.buffer(kind="single", dtype="int64")}

    def get_method(self):
        return self.params.method

    def process_frame(self, frame):
        self.results.seen[:] = frame.sum() + 1
        self.results.count[:] += 1

    def process_tile(self, tile):
        self.results.seen[:] = tile.reshape(len(tile), -1).sum(axis=1) + 1
        self.results.count[:] += len(tile)

    def process_partition(self, partition):
        self.process_tile(partition)

    def merge(self, dest, src):
        dest.seen[:] = src.seen
        dest.count[:] += src.count


def _data():
    return np.random.default_rng(5).integers(0, 100, size=(6, 5, 4, 3)).astype("float32")


@pytest.mark.parametrize("offset", [3, -3])
@pytest.mark.parametrize("method", ["frame", "tile", "partition"])
def test_frames_shifted_out_by_sync_offset_are_not_processed(ctx, offset, method) -> None:
    data = _data()
    flat = data.reshape(30, 4, 3)
    ds = ctx.load("memory", data=data, num_partitions=4, sync_offset=offset)
    count, total = ctx.run_udf(dataset=ds, udf=[CountUDF(method=method), SumUDF()])
    assert count["count"].data[0] == 27
    seen = np.zeros(30)
    if offset > 0:
        seen[:27] = flat[offset:].sum(axis=(1, 2)) + 1  # the last three positions: no frame
    else:
        seen[3:] = flat[:27].sum(axis=(1, 2)) + 1  # the first three: no frame
    np.testing.assert_allclose(count["seen"].data.reshape(-1), seen)
    np.testing.assert_allclose(total["intensity"].data, flat[max(offset, 0): 30 + min(offset, 0)].sum(axis=0))


def test_sync_offset_with_a_roi_that_reaches_past_the_data(ctx) -> None:
    data = _data()
    flat = data.reshape(30, 4, 3)
    ds = ctx.load("memory", data=data, num_partitions=3, sync_offset=2)
    roi = ds.roi[4:, :]  # positions 20..29; 28 and 29 have no frame
    res = ctx.run_udf(dataset=ds, udf=CountUDF(method="tile"), roi=roi)
    assert res["count"].data[0] == 8
    want = np.full(30, np.nan)
    want[20:28] = flat[22:30].sum(axis=(1, 2)) + 1
    want[28:] = 0  # in the ROI, never processed: the buffer's zeros
    np.testing.assert_allclose(res["seen"].data.reshape(-1), want)


def test_a_file_source_leaves_them_out_too(ctx, tmp_path) -> None:
    data = _data()
    np.save(tmp_path / "d.npy", data)
    ds = ctx.load("npy", path=str(tmp_path / "d.npy"), sync_offset=-4, num_partitions=2)
    res = ctx.run_udf(dataset=ds, udf=CountUDF())
    assert res["count"].data[0] == 26
    assert not res["seen"].data.reshape(-1)[:4].any() and res["seen"].data.reshape(-1)[4:].all()


def test_allow_short_still_reads_missing_frames_as_zeros(ctx) -> None:
    data = _data()
    ds = ctx.load("memory", data=data, nav_shape=(7, 5), allow_short=True)
    res = ctx.run_udf(dataset=ds, udf=CountUDF())
    assert res["count"].data[0] == 35  # asked for: the five missing frames are zeros, processed
    np.testing.assert_allclose(res["seen"].data[6], 1)


def test_ds_roi_helper_as_libertem() -> None:
    import detflow as df

    ds = df.Context.make_with("inline").load("memory", data=_data())
    roi = ds.roi[1:3, 2]
    assert roi.shape == (6, 5) and roi.dtype == bool
    assert np.argwhere(roi).tolist() == [[1, 2], [2, 2]]
    assert ds.roi[0, 0].sum() == 1 and ds.roi[:].all()
