"""Corrections: dark, gain and excluded pixels, applied in the partition read, against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import sparse

from detflow.errors import ConfigurationError, GraphValidationError
from detflow.graph import Graph
from detflow.nodes import UDF, SumUDF
from detflow.sources.corrections import CorrectionSet

RNG = np.random.default_rng(11)
DATA = RNG.integers(0, 1000, size=(4, 5, 6, 7)).astype(np.uint16)
DARK = RNG.random((6, 7)).astype(np.float32) * 10
GAIN = (RNG.random((6, 7)) + 0.5).astype(np.float32)
EXCLUDED = [(0, 0), (2, 3), (2, 4), (5, 6)]


def numpy_reference(data, dark=None, gain=None, excluded=()):
    out = data.astype(np.float32)
    if dark is not None:
        out = out - dark
    if gain is not None:
        out = out * gain
    sy, sx = out.shape[-2:]
    bad = set(excluded)
    fixed = out.copy()
    for y, x in excluded:
        nb = [(y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
              if (dy or dx) and 0 <= y + dy < sy and 0 <= x + dx < sx and (y + dy, x + dx) not in bad]
        fixed[..., y, x] = np.mean([out[..., a, b] for a, b in nb], axis=0)
    return fixed


class _Frames(UDF):
    def get_result_buffers(self):
        return {"frames": self.buffer(kind="nav", extra_shape=self.meta.sig_shape, dtype="float64")}

    def _store(self, data):
        assert self.meta.input_dtype == np.float32 and data.dtype == np.float32
        assert isinstance(self.meta.corrections, CorrectionSet)
        self.results.frames[:] = data


class FramesUDF(_Frames):
    """Returns every frame it sees, checking the dtype and corrections it was told about."""

    def process_tile(self, tile):
        self._store(tile)


class PartitionFramesUDF(_Frames):
    def process_partition(self, partition):
        self._store(partition)


@pytest.mark.parametrize("kw", [
    {"dark": DARK}, {"gain": GAIN}, {"dark": DARK, "gain": GAIN, "excluded_pixels": EXCLUDED},
    {"excluded_pixels": EXCLUDED},
])
def test_against_numpy_on_every_executor(ctx, kw) -> None:
    ds = ctx.load("memory", data=DATA, num_partitions=3)
    res = ctx.run_udf(dataset=ds, udf=FramesUDF(), corrections=CorrectionSet(**kw))
    expected = numpy_reference(DATA, kw.get("dark"), kw.get("gain"), kw.get("excluded_pixels", ()))
    np.testing.assert_allclose(res["frames"].data, expected, rtol=1e-6)


def test_excluded_as_mask_coo_and_list_agree() -> None:
    mask = np.zeros((6, 7), bool)
    for y, x in EXCLUDED:
        mask[y, x] = True
    frames = DATA.reshape(20, 6, 7)
    results = []
    for ex in (mask, sparse.COO(mask), EXCLUDED, np.array(EXCLUDED)):
        cs = CorrectionSet(excluded_pixels=ex)
        cs.check((6, 7))
        results.append(cs.apply(frames))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    np.testing.assert_allclose(results[0], numpy_reference(frames, excluded=EXCLUDED), rtol=1e-6)


def test_sum_with_roi_and_partition_method(ctx) -> None:
    roi = np.zeros((4, 5), bool)
    roi[1:3, 2:] = True
    cs = CorrectionSet(dark=DARK, gain=GAIN)
    ds = ctx.load("memory", data=DATA)
    s, f = ctx.run_udf(dataset=ds, udf=[SumUDF(), PartitionFramesUDF()], roi=roi, corrections=cs)
    ref = numpy_reference(DATA, DARK, GAIN)
    assert s["intensity"].data.dtype == np.float32
    np.testing.assert_allclose(s["intensity"].data, ref[roi].sum(axis=0), rtol=1e-5)
    np.testing.assert_allclose(f["frames"].raw_data, ref[roi], rtol=1e-6)


def test_graph_with_npy_paths(tmp_path) -> None:
    np.save(tmp_path / "dark.npy", DARK)
    g = Graph("corr")
    g.source("memory", data=DATA)
    g.partition(corrections={"dark": str(tmp_path / "dark.npy"), "excluded_pixels": [[2, 3]]})
    g.udf("sum", id="s")
    res = g.run(executor="inline")
    np.testing.assert_allclose(res["s"]["intensity"].values,
                               numpy_reference(DATA, DARK, excluded=[(2, 3)]).sum(axis=(0, 1)), rtol=1e-5)


def test_errors_name_the_parameter() -> None:
    g = Graph("bad")
    g.source("memory", data=DATA)
    g.partition(corrections=CorrectionSet(dark=np.zeros((7, 6))))
    g.udf("sum")
    msg = r"parameter 'corrections': .*dark must have the signal shape \(6, 7\)"
    with pytest.raises(GraphValidationError, match=msg):
        g.validate()
    with pytest.raises(ConfigurationError, match=r"excluded pixel\(s\) \[\(0, 0\)\] have no valid neighbour"):
        CorrectionSet(excluded_pixels=[(0, 0), (0, 1), (1, 0), (1, 1)]).check((6, 7))
    lenient = CorrectionSet(excluded_pixels=[(0, 0), (0, 1), (1, 0), (1, 1)], allow_empty=True)
    lenient.check((6, 7))
    frames = DATA.reshape(20, 6, 7)
    out = lenient.apply(frames)
    # (0, 0) has no valid neighbour and is left as it is; (0, 1) is the mean of (0, 2) and (1, 2)
    np.testing.assert_array_equal(out[:, 0, 0], frames[:, 0, 0].astype(np.float32))
    np.testing.assert_allclose(out[:, 0, 1], (frames[:, 0, 2] + frames[:, 1, 2].astype(np.float32)) / 2)
    with pytest.raises(ConfigurationError, match=r"excluded pixel \(9, 9\) lies outside"):
        CorrectionSet(excluded_pixels=[(9, 9)]).check((6, 7))
    with pytest.raises(ConfigurationError, match="unknown key"):
        CorrectionSet.coerce({"darkk": 1})


def test_corrections_pickle_without_tables() -> None:
    import pickle

    cs = CorrectionSet(excluded_pixels=EXCLUDED)
    cs.apply(DATA.reshape(20, 6, 7))
    assert cs._tables and not pickle.loads(pickle.dumps(cs))._tables
