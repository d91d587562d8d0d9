"""The Context API: making contexts, loading, running, mapping, progress."""

from __future__ import annotations

import numpy as np
import pytest

import detflow as df
from detflow.errors import ConfigurationError, UnknownNameError
from detflow.nodes import UDF


class FrameSum(UDF):
    def get_result_buffers(self):
        return {"s": self.buffer(kind="nav", dtype="float64")}

    def process_tile(self, tile):
        self.results.s[:] = tile.reshape(len(tile), -1).sum(axis=1)


@pytest.mark.parametrize(("spec", "kind"), [
    ("inline", "InlineExecutor"), ("threads", "ThreadedExecutor"),
    ("synchronous", "InlineExecutor"), ("concurrent", "ThreadedExecutor"),
])
def test_make_with(spec: str, kind: str) -> None:
    with df.Context.make_with(spec) as ctx:
        assert type(ctx.executor).__name__ == kind
        data = np.ones((3, 3, 4, 4), dtype=np.uint8)
        res = ctx.run_udf(dataset=ctx.load("memory", data=data), udf=FrameSum())
        np.testing.assert_array_equal(res["s"].data, np.full((3, 3), 16.0))


def test_default_context_uses_threads() -> None:
    ctx = df.Context()
    assert type(ctx.executor).__name__ == "ThreadedExecutor"
    ctx.close()


def test_unknown_executor() -> None:
    with pytest.raises(UnknownNameError, match="unknown executor 'warp'; known executors:"):
        df.Context.make_with("warp")


def test_map(ctx) -> None:
    data = np.random.default_rng(3).random((4, 5, 6, 6)).astype(np.float32)
    ds = ctx.load("memory", data=data, num_partitions=2)
    res = ctx.map(dataset=ds, f=lambda frame: frame.max())
    np.testing.assert_allclose(res.data, data.max(axis=(2, 3)))


def test_load_npy_and_raw(ctx, tmp_path) -> None:
    data = np.arange(2 * 3 * 4 * 4, dtype=np.uint32).reshape(2, 3, 4, 4)
    np.save(tmp_path / "a.npy", data)
    data.tofile(tmp_path / "a.raw")
    a = ctx.run_udf(dataset=ctx.load("npy", path=tmp_path / "a.npy"), udf=FrameSum())
    b = ctx.run_udf(
        dataset=ctx.load("raw", path=tmp_path / "a.raw", dtype="uint32", nav_shape=(2, 3),
                         sig_shape=(4, 4)),
        udf=FrameSum(),
    )
    np.testing.assert_array_equal(a["s"].data, data.sum(axis=(2, 3)))
    np.testing.assert_array_equal(b["s"].data, a["s"].data)


def test_progress_counts_frames(ctx, capsys) -> None:
    roi = np.zeros((5, 4), dtype=bool)
    roi[:3] = True
    ds = ctx.load("memory", data=np.ones((5, 4, 4, 4)), num_partitions=3)
    ctx.run_udf(dataset=ds, udf=FrameSum(), roi=roi, progress=True)
    err = capsys.readouterr().err
    assert "12/12" in err and "frame" in err


def test_dataset_must_come_from_load() -> None:
    # refused before any executor is asked: one executor is enough
    ctx = df.Context.make_with("inline")
    with pytest.raises(ConfigurationError, match="dataset must be a dataset from ctx.load"):
        ctx.run_udf(dataset=np.zeros((2, 2, 2, 2)), udf=FrameSum())


def test_unknown_load_keyword() -> None:
    ctx = df.Context.make_with("inline")
    pattern = ("memory source, parameter 'colour': unknown parameter; memory takes: "
               "allow_short, data, nav_shape, sig_dims, sig_shape, sync_offset, tileshape")
    with pytest.raises(ConfigurationError, match=pattern):
        ctx.load("memory", data=np.zeros((2, 2, 2, 2)), colour="red")
