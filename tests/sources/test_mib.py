"""MIB: hand-built files (bytes written here from the format notes, not by detflow's
writer), round trips through the writer for every variant, discovery, nav shapes, errors."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import detflow as df
from detflow.errors import SourceFormatError, SourceNotFoundError
from detflow.sources.base import PartitionPlan
from detflow.sources.mib import MibSource, write_mib

DTYPES = {1: np.uint8, 6: np.uint8, 12: np.uint16, 24: np.uint32}


# --- hand-built bytes ----------------------------------------------------------------
def hand_header(seq: int, w: int, h: int, fmt: str, depth: int, *, chips: int = 1, layout: str = "   1x1") -> bytes:
    """A frame header spelled out as in protocols.md 1.1, NUL-padded."""
    size = 256 + 128 * chips
    if fmt == "R64":
        middle = ","  # raw: thresholds and DACs replaced by one empty field
    else:
        middle = ("1.200000E+2,5.110000E+2,0.000000E+0,0.000000E+0,0.000000E+0,0.000000E+0,"
                  "0.000000E+0,0.000000E+0,")
        dacs = ("175,511,000,000,000,000,000,000,125,255,125,125,100,100,080,100,090,030,128,004,"
                "255,129,128,176,168,511,511")
        middle += f"3RX,{dacs}," * chips
    text = (f"MQ1,{seq:06d},{size:05d},{chips:02d},{w:04d},{h:04d},{fmt},{layout},"
            f"{'01' if chips == 1 else '0F'},2020-05-18 16:51:49.971626,0.000555,0,0,0,{middle}"
            f"MQ1A,2020-05-18T14:51:49.971626178Z,555000ns,{depth},").encode()
    assert len(text) <= size
    return text + b"\0" * (size - len(text))


HAND_HDR = (
    "HDR,\t\r\n"
    "Time and Date Stamp (day, mnth, yr, hr, min, s):\t18/05/2020 16:51:48\r\n"
    "Chip ID:\tW529_F5,-,-,-\r\n"
    "Assembly Size (NX1, 2X2):\t   1x1\r\n"
    "Counter Depth (number):\t{depth}\r\n"
    "Dead Time File:\tDummy (C:\\\0\\)\r\n"
    "Frames in Acquisition (Number):\t{frames}\r\n"
    "Frames per Trigger (Number):\t{fpt}\r\n"
    "End\t    "
)


def r12_row(pixels: list[int]) -> bytes:
    """Chunks of 4 pixels, big-endian u16, slot 3-k holds pixel k."""
    out = b""
    for c in range(0, len(pixels), 4):
        out += b"".join(struct.pack(">H", pixels[c + 3 - s]) for s in range(4))
    return out


def r6_row(pixels: list[int]) -> bytes:
    return b"".join(bytes(pixels[c + 7 - b] for b in range(8)) for c in range(0, len(pixels), 8))


def r1_row(pixels: list[int]) -> bytes:
    out = b""
    for c in range(0, len(pixels), 64):
        out += struct.pack(">Q", sum(int(pixels[c + i]) << i for i in range(64)))
    return out


ROW_ENCODERS = {1: r1_row, 6: r6_row, 12: r12_row}


def hand_raw_frame(img: np.ndarray, depth: int, quad: str | None = None) -> bytes:
    """Raw pixel bytes of one frame, row by row, straight from the notes."""
    if depth == 24:
        return hand_raw_frame(img >> 12, 12, quad) + hand_raw_frame(img & 0xFFF, 12, quad)
    enc = ROW_ENCODERS[depth]
    if quad is None:
        return b"".join(enc([int(v) for v in row]) for row in img)
    h, w = img.shape
    gap = 2 if quad == "2x2G" else 0
    cw, ch = (w - gap) // 2, (h - gap) // 2
    right = cw + gap
    out = b""
    for r in range(ch):
        q1 = list(img[r, 0:cw])
        q2 = list(img[r, right : right + cw])
        q3 = list(img[h - 1 - r, 0:cw])[::-1]
        q4 = list(img[h - 1 - r, right : right + cw])[::-1]
        out += b"".join(enc([int(v) for v in q]) for q in (q4, q3, q2, q1))
    return out


def write_hand(path: Path, frames: list[tuple[bytes, bytes]]) -> None:
    path.write_bytes(b"".join(h + d for h, d in frames))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def read_all(src: MibSource, plan: PartitionPlan | None = None) -> np.ndarray:
    return np.concatenate([p.read() for p in src.partitions(plan)])


# --- hand-built files -----------------------------------------------------------------
@pytest.mark.parametrize("depth,fmt", [(1, "U08"), (6, "U08"), (12, "U16"), (24, "U32")])
def test_hand_built_non_raw_odd_size(tmp_path, rng, depth, fmt) -> None:
    h, w = 100, 120
    imgs = rng.integers(0, 2**depth, size=(6, h, w)).astype(DTYPES[depth])
    be = np.dtype(DTYPES[depth]).newbyteorder(">")
    write_hand(tmp_path / "a.mib", [(hand_header(i + 1, w, h, fmt, depth), img.astype(be).tobytes())
                                    for i, img in enumerate(imgs)])
    (tmp_path / "a.hdr").write_bytes(HAND_HDR.format(depth=depth, frames=6, fpt=3).encode("latin-1"))
    src = MibSource(tmp_path / "a.hdr")
    assert src.shape.nav == (2, 3) and src.shape.sig == (h, w)  # from Frames per Trigger
    assert src.dtype == DTYPES[depth]
    np.testing.assert_array_equal(read_all(src), imgs)


@pytest.mark.parametrize("depth", [1, 6, 12, 24])
def test_hand_built_raw_single_chip(tmp_path, rng, depth) -> None:
    h, w = 3, 128
    imgs = rng.integers(0, 2**depth, size=(5, h, w)).astype(DTYPES[depth])
    hdr_w = 2 * w if depth == 24 else w
    write_hand(tmp_path / "r.mib", [(hand_header(i + 1, hdr_w, h, "R64", depth), hand_raw_frame(img, depth))
                                    for i, img in enumerate(imgs)])
    src = MibSource(tmp_path / "r.mib")  # no .hdr: flat nav
    assert src.shape.nav == (5,) and src.shape.sig == (h, w)
    assert src.dtype == DTYPES[depth] and src.is_raw and src.counter_depth == depth
    np.testing.assert_array_equal(read_all(src, PartitionPlan(frames_per_partition=2)), imgs)


def test_hand_built_r24_many_frames_per_file_keeps_all_24_bits(tmp_path, rng) -> None:
    """LiberTEM 0.16 gets only frame 0 right here, and reports uint16."""
    imgs = rng.integers(2**16, 2**24, size=(4, 2, 64)).astype(np.uint32)
    write_hand(tmp_path / "r24.mib", [(hand_header(i + 1, 128, 2, "R64", 24), hand_raw_frame(img, 24))
                                      for i, img in enumerate(imgs)])
    src = MibSource(tmp_path / "r24.mib")
    assert src.dtype == np.uint32
    np.testing.assert_array_equal(read_all(src), imgs)


@pytest.mark.parametrize("depth", [1, 6, 12, 24])
@pytest.mark.parametrize("quad", ["2x2", "2x2G"])
def test_hand_built_raw_quad(tmp_path, rng, depth, quad) -> None:
    cw = 64
    gap = 2 if quad == "2x2G" else 0
    side = 2 * cw + gap
    imgs = rng.integers(0, 2**depth, size=(2, side, side)).astype(DTYPES[depth])
    if gap:
        imgs[:, cw : cw + 2] = 0
        imgs[:, :, cw : cw + 2] = 0
    hdr_w = 4 * cw * (2 if depth == 24 else 1)
    write_hand(tmp_path / "q.mib", [
        (hand_header(i + 1, hdr_w, cw, "R64", depth, chips=4, layout=f"{quad:>6}"), hand_raw_frame(img, depth, quad))
        for i, img in enumerate(imgs)
    ])
    src = MibSource(tmp_path / "q.mib")
    assert src.shape.sig == (side, side)
    np.testing.assert_array_equal(read_all(src), imgs)


def test_hand_built_quad_real_size_r12(tmp_path, rng) -> None:
    img = rng.integers(0, 4096, size=(514, 514)).astype(np.uint16)
    img[256:258] = 0
    img[:, 256:258] = 0
    write_hand(tmp_path / "q.mib", [(hand_header(1, 1024, 256, "R64", 12, chips=4, layout="  2x2G"),
                                     hand_raw_frame(img, 12, "2x2G"))])
    np.testing.assert_array_equal(read_all(MibSource(tmp_path / "q.mib"))[0], img)


def test_writer_matches_hand_built_bytes(tmp_path, rng) -> None:
    """The writer and the hand-built encoders agree byte for byte on a raw quad."""
    img = rng.integers(0, 4096, size=(1, 130, 130)).astype(np.uint16)
    img[:, 64:66] = 0
    img[:, :, 64:66] = 0
    write_mib(tmp_path / "w.hdr", img, raw=True, layout="2x2G")
    blob = (tmp_path / "w.mib").read_bytes()
    assert blob[768:] == hand_raw_frame(img[0], 12, "2x2G")
    assert blob[:4] == b"MQ1," and b"R64,  2x2G,0F," in blob[:80] and blob[767:768] == b"\0"


# --- round trips through the writer, every variant --------------------------------------
@pytest.mark.parametrize("depth", [1, 6, 12, 24])
@pytest.mark.parametrize("raw", [False, True], ids=["nonraw", "raw"])
@pytest.mark.parametrize("layout,sig", [("1x1", (64, 128)), ("1x1", (256, 256)), ("2x2", (128, 128)),
                                        ("2x2G", (130, 130)), ("2x2G", (514, 514))])
def test_round_trip(tmp_path, rng, depth, raw, layout, sig) -> None:
    n = 2 if sig[0] > 256 else 6
    data = rng.integers(0, 2**depth, size=(n, *sig)).astype(DTYPES[depth])
    if layout == "2x2G":
        c = (sig[0] - 2) // 2
        data[:, c : c + 2] = 0
        data[:, :, c : c + 2] = 0
    write_mib(tmp_path / "rt.hdr", data, counter_depth=depth, raw=raw, layout=layout, frames_per_file=4)
    src = MibSource(tmp_path / "rt.hdr")
    assert src.dtype == DTYPES[depth] and src.shape.sig == sig and src.is_raw == raw
    np.testing.assert_array_equal(read_all(src, PartitionPlan(frames_per_partition=3)), data)


def test_odd_non_raw_size_round_trip(tmp_path, rng) -> None:
    data = rng.integers(0, 4096, size=(3, 4, 100, 120)).astype(np.uint16)
    write_mib(tmp_path / "odd.hdr", data)
    np.testing.assert_array_equal(read_all(MibSource(tmp_path / "odd.hdr")), data.reshape(12, 100, 120))


# --- discovery, ordering, nav shape -----------------------------------------------------
def test_files_ordered_by_sequence_not_name(tmp_path, rng) -> None:
    data = rng.integers(0, 4096, size=(12, 8, 8)).astype(np.uint16)
    files = write_mib(tmp_path / "seq.hdr", data, frames_per_file=1)
    assert len(files) == 13  # scan1.mib ... scan12.mib: "seq10" sorts before "seq2" by name
    for given in (tmp_path / "seq.hdr", tmp_path / "seq7.mib"):
        src = MibSource(given)
        assert len(src.files) == 12 and src.hdr_path == str(tmp_path / "seq.hdr")
        np.testing.assert_array_equal(read_all(src), data)


def test_disable_glob_reads_one_file(tmp_path, rng) -> None:
    data = rng.integers(0, 4096, size=(6, 8, 8)).astype(np.uint16)
    write_mib(tmp_path / "g.hdr", data, frames_per_file=2)
    src = MibSource(tmp_path / "g2.mib", disable_glob=True, nav_shape=(2,))
    np.testing.assert_array_equal(read_all(src), data[2:4])


def test_sibling_acquisitions_with_a_common_prefix_stay_apart(tmp_path, rng) -> None:
    a = rng.integers(0, 4096, size=(4, 8, 8)).astype(np.uint16)
    write_mib(tmp_path / "scan1.hdr", a)
    write_mib(tmp_path / "scan12b.hdr", a[:2])
    np.testing.assert_array_equal(read_all(MibSource(tmp_path / "scan1.hdr")), a)


@pytest.mark.parametrize("how,expected", [("scan", (3, 5)), ("fpt", (3, 5)), ("none", (15,))])
def test_nav_shape_sources(tmp_path, rng, how, expected) -> None:
    data = rng.integers(0, 4096, size=(3, 5, 8, 8)).astype(np.uint16)
    write_mib(tmp_path / "n.hdr", data, scan_xy=how == "scan", write_hdr=how != "none")
    path = tmp_path / ("n.mib" if how == "none" else "n.hdr")
    src = MibSource(path)
    assert src.shape.nav == expected
    assert ("ScanX" in src.header) == (how == "scan")


def test_nav_shape_and_sync_offset_overrides(tmp_path, rng) -> None:
    data = rng.integers(0, 4096, size=(4, 5, 8, 8)).astype(np.uint16)
    write_mib(tmp_path / "o.hdr", data, frames_per_file=3)
    with df.Context.make_with("inline") as ctx:
        src = ctx.load("mib", path=tmp_path / "o.hdr", nav_shape=(5, 4), sync_offset=2)
    flat = data.reshape(20, 8, 8)
    expected = np.concatenate([flat[2:], np.zeros((2, 8, 8), np.uint16)])
    assert src.shape.nav == (5, 4)
    np.testing.assert_array_equal(read_all(src, PartitionPlan(frames_per_partition=7)), expected)


def test_sum_udf_over_raw_mib_on_every_executor(ctx, tmp_path, rng) -> None:
    from detflow.nodes import SumUDF

    data = rng.integers(0, 2**24, size=(3, 4, 32, 32)).astype(np.uint32)
    write_mib(tmp_path / "s.hdr", data, raw=True, frames_per_file=5)
    res = ctx.run_udf(dataset=ctx.load("mib", path=tmp_path / "s.hdr"), udf=SumUDF())
    np.testing.assert_array_equal(res["intensity"].data, data.sum(axis=(0, 1)))


def test_import_detflow_and_mib_do_not_import_numba() -> None:
    code = "import sys, detflow, detflow.sources.mib; assert 'numba' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- errors ----------------------------------------------------------------------------
def test_truncated_file_names_file_and_frame(tmp_path, rng) -> None:
    data = rng.integers(0, 4096, size=(4, 16, 16)).astype(np.uint16)
    write_mib(tmp_path / "t.hdr", data)
    blob = (tmp_path / "t.mib").read_bytes()
    (tmp_path / "t.mib").write_bytes(blob[:-100])
    with pytest.raises(SourceFormatError, match=r"t\.mib: truncated.*frame 3 has 796 of its 896 bytes"):
        MibSource(tmp_path / "t.hdr")


def test_unparsable_first_header(tmp_path) -> None:
    (tmp_path / "bad.mib").write_bytes(b"MQ1,000001,garbage" + b"\0" * 500)
    with pytest.raises(SourceFormatError, match=r"bad\.mib, frame 0: frame header"):
        MibSource(tmp_path / "bad.mib")
    (tmp_path / "bad.mib").write_bytes(b"XYZ" * 300)
    with pytest.raises(SourceFormatError, match=r"bad\.mib, frame 0: not a Merlin frame header"):
        MibSource(tmp_path / "bad.mib")


def test_corrupt_header_mid_file_found_when_read(tmp_path, rng) -> None:
    data = rng.integers(0, 4096, size=(6, 16, 16)).astype(np.uint16)
    write_mib(tmp_path / "c.hdr", data)
    blob = bytearray((tmp_path / "c.mib").read_bytes())
    blob[3 * (384 + 512) : 3 * (384 + 512) + 3] = b"XXX"
    (tmp_path / "c.mib").write_bytes(bytes(blob))
    src = MibSource(tmp_path / "c.hdr")
    with pytest.raises(SourceFormatError, match=r"c\.mib, frame 3: expected a frame header"):
        read_all(src)


def test_hdr_without_required_keys(tmp_path, rng) -> None:
    write_mib(tmp_path / "k.hdr", rng.integers(0, 9, size=(2, 8, 8)).astype(np.uint16))
    text = (tmp_path / "k.hdr").read_text("latin-1").replace("Frames per Trigger (Number)", "Frames per Tr")
    (tmp_path / "k.hdr").write_text(text, "latin-1")
    with pytest.raises(SourceFormatError, match=r"k\.hdr: .*lacks the required key.*'Frames per Trigger \(Number\)'"):
        MibSource(tmp_path / "k.hdr")


def test_files_of_mixed_frame_sizes(tmp_path, rng) -> None:
    write_mib(tmp_path / "m.hdr", rng.integers(0, 9, size=(4, 16, 16)).astype(np.uint16), frames_per_file=2)
    write_mib(tmp_path / "other", rng.integers(0, 9, size=(2, 8, 8)).astype(np.uint16), write_hdr=False,
              first_sequence=5)
    os.replace(tmp_path / "other.mib", tmp_path / "m3.mib")
    with pytest.raises(SourceFormatError, match=r"m3\.mib, frame 0: mixed frame sizes.*8x8.*16x16"):
        MibSource(tmp_path / "m.hdr")


def test_mixed_frame_sizes_within_a_file(tmp_path, rng) -> None:
    write_mib(tmp_path / "a.hdr", rng.integers(0, 9, size=(3, 16, 16)).astype(np.uint16))
    write_mib(tmp_path / "b", rng.integers(0, 9, size=(7, 8, 8)).astype(np.uint16), write_hdr=False)
    with open(tmp_path / "a.mib", "ab") as f:  # 7 small frames: the size happens to fit whole frames
        f.write((tmp_path / "b.mib").read_bytes()[: (384 + 128) * 7])
    os.remove(tmp_path / "b.mib")
    with pytest.raises(SourceFormatError, match=r"a\.mib, frame 6: .*mixed frame sizes"):
        read_all(MibSource(tmp_path / "a.hdr"))


def test_overlapping_acquisitions(tmp_path, rng) -> None:
    write_mib(tmp_path / "x.hdr", rng.integers(0, 9, size=(2, 8, 8)).astype(np.uint16), frames_per_file=1)
    write_mib(tmp_path / "other", rng.integers(0, 9, size=(2, 8, 8)).astype(np.uint16), write_hdr=False)
    os.replace(tmp_path / "other.mib", tmp_path / "x_3.mib")  # numbered like x's files, frames 1..2 again
    with pytest.raises(SourceFormatError, match="overlap"):
        MibSource(tmp_path / "x.hdr")


def test_missing_files(tmp_path) -> None:
    with pytest.raises(SourceNotFoundError, match="nope.hdr"):
        MibSource(tmp_path / "nope.hdr")
    (tmp_path / "lonely.hdr").write_text(HAND_HDR.format(depth=12, frames=1, fpt=1))
    with pytest.raises(SourceNotFoundError, match=r"lonely\*\.mib"):
        MibSource(tmp_path / "lonely.hdr")


def test_writer_rejects_values_beyond_the_counter(tmp_path) -> None:
    with pytest.raises(ValueError, match="0..63"):
        write_mib(tmp_path / "v.hdr", np.full((1, 8, 8), 64, np.uint8), counter_depth=6)


@pytest.mark.parametrize("depth", [1, 6, 12, 24])
@pytest.mark.parametrize("layout,sig", [("1x1", (64, 128)), ("2x2", (128, 128)), ("2x2G", (130, 130))])
def test_decode_frames_unaligned_input_and_strided_output(tmp_path, rng, depth, layout, sig) -> None:
    """The kernels' fallbacks: frame bytes at an odd address, and an output with strided rows."""
    from detflow.sources.mib_decode import MibLayout, decode_frames, parse_frame_header

    data = rng.integers(0, 2**depth, size=(3, *sig)).astype(DTYPES[depth])
    if layout == "2x2G":
        c = (sig[0] - 2) // 2
        data[:, c : c + 2] = 0
        data[:, :, c : c + 2] = 0
    write_mib(tmp_path / "v.hdr", data, counter_depth=depth, raw=True, layout=layout)
    blob = (tmp_path / "v.mib").read_bytes()
    lay = MibLayout.from_header(parse_frame_header(blob[:4096], "v"), "v")
    odd = np.frombuffer(b"\0" + blob, dtype=np.uint8)[1:].reshape(3, lay.frame_bytes)
    out = np.full((3, *sig), 7, dtype=lay.dtype)
    decode_frames(lay, odd, out)
    np.testing.assert_array_equal(out, data)
    wide = np.full((3, sig[0], 2 * sig[1]), 7, dtype=lay.dtype)
    decode_frames(lay, odd[::-1], wide[:, :, ::2])
    np.testing.assert_array_equal(wide[:, :, ::2], data[::-1])
    np.testing.assert_array_equal(wide[:, :, 1::2], 7)
