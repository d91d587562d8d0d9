"""Norpix ``.seq`` files, written with numpy following the format's facts, compared with pims' reading.

pims' ``NorpixSeq`` is the maintained reader of the format (it does not write it); each
file here is written by :func:`write_seq` from the layout in
:mod:`detflow.sources.seq`'s docstring, independently of detflow's reader.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

import detflow as df
from detflow.errors import SourceFormatError
from detflow.nodes import SumSigUDF, SumUDF
from detflow.sources.auto import detect_format

RNG = np.random.default_rng(13)
FRAMES = RNG.integers(0, 60000, (12, 10, 14), dtype=np.uint16)
PADDING = 24  # bytes after each image's 8-byte timestamp


def write_seq(path: Path, frames: np.ndarray = FRAMES, *, version: int = 5, allocated: int | None = None,
              cut: int = 0) -> Path:
    """A StreamPix sequence: header, then per frame its pixels, a timestamp and padding; ``cut`` bytes off the end."""
    n, height, width = frames.shape
    bits = frames.dtype.itemsize * 8
    image_bytes = width * height * frames.dtype.itemsize
    true_size = image_bytes + 8 + PADDING
    header = bytearray(1024)
    struct.pack_into("<I", header, 0, 0xFEED)
    header[4:24] = "Norpix seq".encode("utf-16-le")
    struct.pack_into("<ii", header, 28, version, 1024)
    struct.pack_into("<9I", header, 548, width, height, bits, bits, image_bytes, 100,
                     n if allocated is None else allocated, 0, true_size)
    struct.pack_into("<d", header, 584, 100.0)
    offset = 8192 if version >= 5 else 1024
    with open(path, "wb") as f:
        f.write(bytes(header) + bytes(offset - 1024))
        for i, frame in enumerate(frames):
            f.write(frame.astype(frames.dtype.newbyteorder("<")).tobytes())
            f.write(struct.pack("<IHH", 1_700_000_000 + i, i % 1000, 0) + b"\xab" * PADDING)
    if cut:
        os.truncate(path, os.path.getsize(path) - cut)
    return path


def pims_reading(path: Path) -> np.ndarray:
    pims = pytest.importorskip("pims", reason="pims reads .seq files in the tests: pip install pims")
    seq = pims.NorpixSeq(str(path))
    return np.stack([np.asarray(seq[i]) for i in range(len(seq))])


def read_all(ds) -> np.ndarray:
    return np.concatenate([p.read() for p in ds.get_partitions()])


@pytest.mark.parametrize("version", [5, 4])
def test_frames_equal_pims_reading(tmp_path, version) -> None:
    path = write_seq(tmp_path / "a.seq", version=version)
    reference = pims_reading(path)
    np.testing.assert_array_equal(reference, FRAMES)
    assert detect_format(path) == "seq"
    with df.Context.make_with("inline") as ctx:
        ds = ctx.load("seq", path=path, frames_per_partition=5)
    assert ds.shape == (12, 10, 14) and ds.dtype == np.uint16
    np.testing.assert_array_equal(read_all(ds), reference)


@pytest.mark.parametrize("executor", ["inline", "threads", "pipelined"])
def test_sums_equal_numpy_on_pims_reading(tmp_path, executor) -> None:
    path = write_seq(tmp_path / "scan.seq")
    reference = pims_reading(path).astype(np.float64)
    with df.Context.make_with(executor, cpus=2) as ctx:
        ds = ctx.load("auto", path=path, nav_shape=(3, 4), frames_per_partition=5)
        total, sums = ctx.run_udf(dataset=ds, udf=[SumUDF(), SumSigUDF()])
    np.testing.assert_allclose(total["intensity"].data, reference.sum(axis=0))
    np.testing.assert_allclose(sums["intensity"].data, reference.sum(axis=(1, 2)).reshape(3, 4))


def test_the_frame_count_counts_whole_images(tmp_path) -> None:
    """The last frame counts when its pixels are there, whatever follows them."""
    ctx = df.Context.make_with("inline")
    # cut after the last image's pixels: its timestamp and padding are gone, the frame is whole
    ds = ctx.load("seq", path=write_seq(tmp_path / "a.seq", cut=8 + PADDING))
    assert ds.shape.nav == (12,)
    np.testing.assert_array_equal(read_all(ds), FRAMES)
    # cut inside the last image: 11 whole frames
    ds = ctx.load("seq", path=write_seq(tmp_path / "b.seq", cut=8 + PADDING + 2))
    assert ds.shape.nav == (11,)
    np.testing.assert_array_equal(read_all(ds), FRAMES[:11])
    # a scan of 12 on the cut file is an error naming the file and the counts
    with pytest.raises(SourceFormatError, match=r"b\.seq: holds 11 frames .* nav_shape \(3, 4\) needs 12: 1 missing"):
        ctx.load("seq", path=tmp_path / "b.seq", nav_shape=(3, 4))


def test_allocated_frames_bound_the_count(tmp_path) -> None:
    """Space the camera allocated past the frames it wrote (the header says 9) is not read as frames."""
    ds = df.Context.make_with("inline").load("seq", path=write_seq(tmp_path / "a.seq", allocated=9))
    assert ds.shape.nav == (9,)
    np.testing.assert_array_equal(read_all(ds), FRAMES[:9])


def test_eight_and_thirty_two_bit(tmp_path) -> None:
    for dtype in (np.uint8, np.uint32):
        frames = FRAMES.astype(dtype)
        path = write_seq(tmp_path / f"{np.dtype(dtype).name}.seq", frames)
        ds = df.Context.make_with("inline").load("seq", path=path)
        assert ds.dtype == dtype
        np.testing.assert_array_equal(read_all(ds), pims_reading(path))


def test_bad_headers_are_named(tmp_path) -> None:
    ctx = df.Context.make_with("inline")
    path = write_seq(tmp_path / "c.seq")
    with open(path, "r+b") as f:
        f.seek(620)
        f.write(struct.pack("<I", 1))
    with pytest.raises(SourceFormatError, match=r"c\.seq: compressed \.seq files"):
        ctx.load("seq", path=path)
    (tmp_path / "x.seq").write_bytes(b"\x00" * 2000)
    with pytest.raises(SourceFormatError, match=r"x\.seq: not a Norpix \.seq file"):
        ctx.load("auto", path=tmp_path / "x.seq")
    (tmp_path / "short.seq").write_bytes(b"\xed\xfe\x00\x00")
    with pytest.raises(SourceFormatError, match=r"short\.seq: 4 bytes: shorter than a Norpix \.seq header"):
        ctx.load("seq", path=tmp_path / "short.seq")
