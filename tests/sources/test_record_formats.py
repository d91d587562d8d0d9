"""Blockfile and EMPAD: frames stored one per record, with bytes around each frame.

Each file here is written independently of detflow: blockfiles by rosettasciio's own
writer, EMPAD acquisitions with numpy following the format's facts (rosettasciio
reads EMPAD but does not write it). Every result is compared with rosettasciio's own
reading of the same file.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import detflow as df
from detflow.errors import SourceFormatError, SourceNotFoundError
from detflow.nodes import SumSigUDF, SumUDF
from detflow.sources.auto import detect_format

RNG = np.random.default_rng(11)
BLOCKS = RNG.integers(0, 256, (3, 5, 16, 16), dtype=np.uint8)
EMPAD = RNG.random((3, 4, 130, 128), dtype=np.float32) * 1000
EMPAD[..., 128:, :] = 7e30  # the 2 metadata rows of each frame: never part of the signal


def write_blockfile(path: Path, data: np.ndarray = BLOCKS) -> Path:
    blockfile = pytest.importorskip("rsciio.blockfile", reason="rosettasciio[blockfile] writes the test files")
    axes = [{"name": n, "size": s, "navigate": nav, "units": u, "scale": 1.0, "offset": 0.0}
            for n, s, nav, u in zip(("y", "x", "dy", "dx"), data.shape, (True, True, False, False),
                                    ("nm", "nm", "cm", "cm"), strict=True)]
    signal = {"data": data, "axes": axes, "metadata": {}, "original_metadata": {}, "attributes": {"_lazy": False}}
    blockfile.file_writer(str(path), signal, show_progressbar=False)
    return path


def write_empad(folder: Path, data: np.ndarray = EMPAD, *, header: str | None = None) -> Path:
    """An acquisition as the EMPAD software lays it out: ``scan_x{X}_y{Y}.raw`` and its XML."""
    ny, nx = data.shape[:2]
    raw = f"scan_x{nx}_y{ny}.raw"
    data.astype("<f4").tofile(folder / raw)
    xml = folder / "acquisition.xml"
    # no whitespace between elements: rosettasciio's XML reader takes any text as a leaf's value
    xml.write_text(header or f'<?xml version="1.0"?><root><raw_file filename="{raw}"/>'
                             f"<timestamp isoformat=\"2024-01-01T00:00:00\"/></root>")
    return xml


def library_reading(kind: str, path: Path) -> np.ndarray:
    """What rosettasciio itself reads from ``path``."""
    module = pytest.importorskip(f"rsciio.{kind}", reason="the formats extra: pip install -e '.[formats]'")
    return np.asarray(module.file_reader(str(path))[0]["data"])


@pytest.fixture(params=["blockfile", "empad"])
def written(request, tmp_path):
    kind = request.param
    path = write_blockfile(tmp_path / "scan.blo") if kind == "blockfile" else write_empad(tmp_path)
    return kind, path, library_reading(kind, path)


def test_the_library_reads_what_was_written(written) -> None:
    kind, _, reference = written
    expected = BLOCKS if kind == "blockfile" else EMPAD[..., :128, :]
    np.testing.assert_array_equal(reference, expected)


@pytest.mark.parametrize("executor", ["inline", "threads", "pipelined"])
def test_results_equal_numpy_on_the_librarys_reading(written, executor) -> None:
    kind, path, reference = written
    assert detect_format(path) == kind
    with df.Context.make_with(executor, cpus=2) as ctx:
        ds = ctx.load("auto", path=path, frames_per_partition=4)
        assert ds.name == kind and ds.dtype == reference.dtype
        assert ds.shape == reference.shape
        total, sums = ctx.run_udf(dataset=ds, udf=[SumUDF(), SumSigUDF()])
    f64 = reference.astype(np.float64)
    np.testing.assert_allclose(total["intensity"].data, f64.sum(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(sums["intensity"].data, f64.sum(axis=(2, 3)), rtol=1e-6)


def test_frames_read_back_exactly_and_partitions_pickle_small(written) -> None:
    kind, path, reference = written
    with df.Context.make_with("inline") as ctx:
        ds = ctx.load(kind, path=path, frames_per_partition=5)
    parts = ds.get_partitions()
    assert len(parts) == 3
    got = np.concatenate([p.read() for p in parts])
    np.testing.assert_array_equal(got, reference.reshape(-1, *reference.shape[2:]))
    # a tile in the middle of a partition, across a record boundary
    np.testing.assert_array_equal(parts[1].read_frames(1, 3), reference.reshape(-1, *reference.shape[2:])[6:8])
    assert all(len(pickle.dumps(p)) < 2000 for p in parts)  # the file's layout, not its pixels


def test_a_truncated_file_names_the_file_and_the_counts(tmp_path) -> None:
    path = write_blockfile(tmp_path / "cut.blo")
    record = 6 + 16 * 16
    os.truncate(path, os.path.getsize(path) - 4 * record)  # 4 of the 15 frames lost
    with pytest.raises(SourceFormatError, match=r"cut\.blo: holds 11 frames .* needs 15: 4 missing"):
        df.Context.make_with("inline").load("blockfile", path=path)
    ds = df.Context.make_with("inline").load("blockfile", path=path, allow_short=True)
    got = np.concatenate([p.read() for p in ds.partitions()])
    np.testing.assert_array_equal(got[:11], BLOCKS.reshape(15, 16, 16)[:11])
    assert not got[11:].any()


def test_blockfile_header_fields_are_the_librarys() -> None:
    api = pytest.importorskip("rsciio.blockfile._api", reason="rosettasciio[blockfile]")
    from detflow.sources.blockfile import HEADER

    theirs = np.dtype(api.get_header_dtype_list("<"))
    for name in HEADER.names:
        assert HEADER.fields[name][1] == theirs.fields[name][1], name  # the same byte offset
        assert HEADER.fields[name][0].itemsize == theirs.fields[name][0].itemsize, name


def test_not_a_blockfile(tmp_path) -> None:
    (tmp_path / "x.blo").write_bytes(b"IMGBLO" + b"\xff\xff" + bytes(100))
    with pytest.raises(SourceFormatError, match=r"x\.blo: .*signature"):
        df.Context.make_with("inline").load("blockfile", path=tmp_path / "x.blo")


def test_empad_series_and_pix_headers(tmp_path) -> None:
    """The two other ways an EMPAD header gives the scan: a series count, and pix_x/pix_y."""
    data = EMPAD.reshape(12, 130, 128)[:6]
    data.astype("<f4").tofile(tmp_path / "series.raw")
    xml = tmp_path / "series.xml"
    xml.write_text('<?xml version="1.0"?><root><raw_file filename="series.raw"/>'
                   "<scan_parameters><series_count>6</series_count></scan_parameters></root>")
    ds = df.Context.make_with("inline").load("auto", path=xml)
    assert ds.shape.nav == (6,)
    np.testing.assert_array_equal(np.concatenate([p.read() for p in ds.partitions()]), library_reading("empad", xml))
    data.astype("<f4").tofile(tmp_path / "frames.raw")
    (tmp_path / "pix.xml").write_text('<?xml version="1.0"?>\n<root>\n  <raw_file filename="frames.raw"/>\n'
                                      "  <pix_x>3</pix_x>\n  <pix_y>2</pix_y>\n</root>\n")
    ds = df.Context.make_with("inline").load("empad", path=tmp_path / "pix.xml")
    assert ds.shape.nav == (2, 3)
    np.testing.assert_array_equal(np.concatenate([p.read() for p in ds.partitions()]), data[:, :128])


def test_empad_errors_name_the_file(tmp_path) -> None:
    ctx = df.Context.make_with("inline")
    xml = write_empad(tmp_path)
    os.remove(tmp_path / "scan_x4_y3.raw")
    with pytest.raises(SourceNotFoundError, match=r"scan_x4_y3\.raw.*acquisition\.xml names it"):
        ctx.load("empad", path=xml)
    (tmp_path / "scan_x4_y3.raw").write_bytes(bytes(130 * 128 * 4 + 10))
    with pytest.raises(SourceFormatError, match=r"scan_x4_y3\.raw: 66570 bytes is not a whole number of EMPAD"):
        ctx.load("empad", path=xml)
    (tmp_path / "bad.xml").write_text('<?xml version="1.0"?><root><raw_file filename="f.raw"/></root>')
    with pytest.raises(SourceFormatError, match=r"bad\.xml: the EMPAD header gives no scan shape"):
        ctx.load("empad", path=tmp_path / "bad.xml")
    with pytest.raises(df.DetflowError, match="did you mean .nav_shape."):
        ctx.load("empad", path=xml, navshape=(2, 2))


def test_another_xml_file_is_refused_by_what_it_lacks(tmp_path) -> None:
    from detflow.sources.empad import EmpadSource

    (tmp_path / "settings.xml").write_text('<?xml version="1.0"?><settings><a>1</a></settings>')
    assert not EmpadSource.can_open(str(tmp_path / "settings.xml"))  # only the suffix points to EMPAD
    with pytest.raises(SourceFormatError, match=r"settings\.xml: the EMPAD header names no raw file"):
        df.Context.make_with("inline").load("auto", path=tmp_path / "settings.xml")
