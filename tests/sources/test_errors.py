"""Bad input gets errors that name the file and say what was expected."""

from __future__ import annotations

import numpy as np
import pytest

import detflow as df
from detflow.errors import (
    ConfigurationError,
    DetflowError,
    SourceFormatError,
    SourceNotFoundError,
    UnknownNameError,
)


@pytest.fixture
def ctx():
    return df.Context.make_with("inline")


def test_missing_npy_file(ctx, tmp_path) -> None:
    path = tmp_path / "nope.npy"
    with pytest.raises(SourceNotFoundError, match="nope.npy") as info:
        ctx.load("npy", path=path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, DetflowError)


def test_missing_raw_file(ctx, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="gone.raw"):
        ctx.load("raw", path=tmp_path / "gone.raw", dtype="u2", nav_shape=(2, 2), sig_shape=(4, 4))


def test_raw_size_not_whole_frames(ctx, tmp_path) -> None:
    path = tmp_path / "odd.raw"
    np.zeros(4 * 16 + 3, dtype=np.uint16).tofile(path)
    with pytest.raises(SourceFormatError, match=r"odd\.raw.*not a whole number of frames"):
        ctx.load("raw", path=path, dtype="uint16", nav_shape=(2, 2), sig_shape=(4, 4))


def test_raw_too_few_frames_for_nav_shape(ctx, tmp_path) -> None:
    path = tmp_path / "short.raw"
    np.zeros((3, 4, 4), dtype=np.uint16).tofile(path)
    with pytest.raises(SourceFormatError, match=r"short\.raw: holds 3 frames.*needs 4"):
        ctx.load("raw", path=path, dtype="uint16", nav_shape=(2, 2), sig_shape=(4, 4))


def test_raw_requires_shapes(ctx, tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="raw source, parameter 'nav_shape': is required"):
        ctx.load("raw", path=tmp_path / "x", dtype="u2", sig_shape=(4, 4))


def test_truncated_npy(ctx, tmp_path) -> None:
    path = tmp_path / "cut.npy"
    np.save(path, np.zeros((4, 4, 8, 8), dtype=np.uint16))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 100])
    with pytest.raises(SourceFormatError, match=r"cut\.npy: truncated"):
        ctx.load("npy", path=path)


def test_not_an_npy_file(ctx, tmp_path) -> None:
    path = tmp_path / "text.npy"
    path.write_text("hello, this is not numpy")
    with pytest.raises(SourceFormatError, match=r"text\.npy: not a valid \.npy file"):
        ctx.load("npy", path=path)


def test_unknown_source_lists_known_ones(ctx) -> None:
    pattern = r"unknown source 'hdf6'; did you mean 'hdf5'\? known sources: .*memory.*npy.*raw"
    with pytest.raises(UnknownNameError, match=pattern) as info:
        ctx.load("hdf6", path="x.h5")
    assert isinstance(info.value, ValueError)


def test_sync_offset_out_of_range(ctx) -> None:
    with pytest.raises(ConfigurationError, match="sync_offset must be between -3 and 3"):
        ctx.load("memory", data=np.zeros((2, 2, 4, 4)), sync_offset=4)


def test_bad_partition_sizes(ctx) -> None:
    ds = ctx.load("memory", data=np.zeros((2, 2, 4, 4)), num_partitions=0)
    from detflow.errors import GraphValidationError
    from detflow.nodes import SumUDF

    with pytest.raises(GraphValidationError, match="parameter 'num_partitions': must be an integer >= 1; got 0"):
        ctx.run_udf(dataset=ds, udf=SumUDF())


def test_a_too_large_sig_shape_is_blamed_on_sig_shape(ctx, tmp_path) -> None:
    path = tmp_path / "scan.npy"
    np.save(path, np.zeros((4, 4, 8, 8), np.uint16))
    with pytest.raises(SourceFormatError, match=r"scan.npy.*sig_shape \(16, 16\) re-cuts the \(8, 8\) frames as "
                                                r"stored; check sig_shape"):
        ctx.load("npy", path=path, sig_shape=(16, 16), nav_shape=(4, 4))
    with pytest.raises(SourceFormatError, match="give a nav_shape that fits") as info:  # the frame is as stored
        ctx.load("npy", path=path, nav_shape=(8, 8))
    assert "check sig_shape" not in str(info.value)
