"""DigitalMicrograph files (DM3, DM4), read through rosettasciio.

No maintained library writes DM files, so :mod:`tests.sources.dm_files` writes them
from the format's layout; every file is first checked with rosettasciio's reader, and
detflow's results are compared with numpy on rosettasciio's own reading.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

import detflow as df
from detflow.errors import ConfigurationError, SourceFormatError
from detflow.nodes import SumSigUDF, SumUDF
from detflow.sources.auto import detect_format
from tests.sources.dm_files import write_dm

dm = pytest.importorskip("rsciio.digitalmicrograph", reason="the formats extra: pip install -e '.[formats]'")

RNG = np.random.default_rng(17)
STACK = RNG.integers(0, 5000, (3, 4, 10, 12), dtype=np.uint16)  # a 4D-STEM scan: nav (3, 4), frames 10 x 12
THUMBNAIL = RNG.random((8, 8), dtype=np.float32)


def library_reading(path) -> list[np.ndarray]:
    return [np.asarray(s["data"]) for s in dm.file_reader(str(path))]


@pytest.fixture(params=[3, 4], ids=["dm3", "dm4"])
def written(request, tmp_path):
    path = write_dm(tmp_path / f"scan.dm{request.param}", THUMBNAIL, STACK, version=request.param)
    images = library_reading(path)
    np.testing.assert_array_equal(images[1], STACK)  # the writer wrote what the library reads
    return path, images[1]


@pytest.mark.parametrize("executor", ["inline", "threads", "pipelined"])
def test_results_equal_numpy_on_the_librarys_reading(written, executor) -> None:
    path, reference = written
    assert detect_format(path) == "dm"
    with df.Context.make_with(executor, cpus=2) as ctx:
        ds = ctx.load("auto", path=path, frames_per_partition=5)
        assert ds.name == "dm" and ds.shape == reference.shape and ds.dtype == reference.dtype
        total, sums = ctx.run_udf(dataset=ds, udf=[SumUDF(), SumSigUDF()])
    f64 = reference.astype(np.float64)
    np.testing.assert_allclose(total["intensity"].data, f64.sum(axis=(0, 1)))
    np.testing.assert_allclose(sums["intensity"].data, f64.sum(axis=(2, 3)))


def test_frames_read_back_exactly_and_pickle_small(written) -> None:
    path, reference = written
    ds = df.Context.make_with("inline").load("dm", path=path, frames_per_partition=5)
    parts = ds.get_partitions()
    np.testing.assert_array_equal(np.concatenate([p.read() for p in parts]), reference.reshape(12, 10, 12))
    assert all(len(pickle.dumps(p)) < 2000 for p in parts)


def test_a_stack_of_frames_and_the_image_parameter(tmp_path) -> None:
    frames = RNG.random((6, 5, 7), dtype=np.float32)
    path = write_dm(tmp_path / "stack.dm4", frames, THUMBNAIL)
    ctx = df.Context.make_with("inline")
    ds = ctx.load("dm", path=path, nav_shape=(2, 3))
    assert ds.shape == (2, 3, 5, 7)
    np.testing.assert_array_equal(np.concatenate([p.read() for p in ds.partitions()]), library_reading(path)[0])
    single = ctx.load("dm", path=path, image=1)  # a 2-D image is one frame
    assert single.shape == (1, 8, 8)
    np.testing.assert_array_equal(next(single.partitions()).read()[0], THUMBNAIL)
    with pytest.raises(ConfigurationError, match=r"parameter 'image' is 5; the file holds 0: \(6, 5, 7\) float32, "
                                                 r"1: \(8, 8\) float32"):
        ctx.load("dm", path=path, image=5)


def test_ambiguous_and_broken_files_are_named(tmp_path) -> None:
    ctx = df.Context.make_with("inline")
    path = write_dm(tmp_path / "two.dm4", STACK, STACK[:2])
    with pytest.raises(ConfigurationError, match=r"two\.dm4: give parameter 'image'.*0: \(3, 4, 10, 12\) uint16, "
                                                 r"1: \(2, 4, 10, 12\) uint16"):
        ctx.load("dm", path=path)
    assert ctx.load("dm", path=path, image=1).shape.nav == (2, 4)
    (tmp_path / "junk.dm4").write_bytes(b"\x00\x00\x00\x04" + os.urandom(200))
    with pytest.raises(SourceFormatError, match=r"junk\.dm4: not a readable DigitalMicrograph file"):
        ctx.load("auto", path=tmp_path / "junk.dm4")


def test_a_cut_file_is_named(tmp_path) -> None:
    """The tag tree goes on after the pixels: a cut file fails to parse, and the error names it."""
    path = write_dm(tmp_path / "cut.dm4", STACK)
    os.truncate(path, os.path.getsize(path) - 2 * STACK[0, 0].nbytes - 100)
    with pytest.raises(SourceFormatError, match=r"cut\.dm4: not a readable DigitalMicrograph file"):
        df.Context.make_with("inline").load("dm", path=path)
