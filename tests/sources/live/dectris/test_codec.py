"""The blob codecs against an independent encoder and decoder: the HDF5 filters of hdf5plugin."""

from __future__ import annotations

import struct
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from detflow.errors import DetectorProtocolError
from detflow.sources.live.dectris.codec import EncodedFramesReader, decode, encode
from detflow.sources.readers import ArrayReader

from .conftest import random_frames

DTYPES = [np.uint8, np.uint16, np.uint32]
# 24x32: whole blocks only; 37x41 = 1517 pixels: a short last block and 5 pixels stored as they are
SIGS = [(24, 32), (37, 41), (256, 256)]


def filter_chunks(tmp_path: Path, frames: np.ndarray, filters: dict) -> list[bytes]:
    """Each frame as the HDF5 filter stores it (one chunk per frame)."""
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("d", data=frames, chunks=(1, *frames.shape[1:]), **filters)
        return [bytes(ds.id.read_direct_chunk((i, 0, 0))[1]) for i in range(len(frames))]


def filter_decoded(tmp_path: Path, blobs: list[bytes], like: np.ndarray, filters: dict) -> np.ndarray:
    """What the HDF5 filter decodes ``blobs`` to."""
    with h5py.File(tmp_path / "g.h5", "w") as f:
        ds = f.create_dataset("d", shape=like.shape, dtype=like.dtype, chunks=(1, *like.shape[1:]), **filters)
        for i, blob in enumerate(blobs):
            ds.id.write_direct_chunk((i, 0, 0), blob)
        return ds[()]


@pytest.mark.parametrize("sig", SIGS, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_bitshuffle_lz4_both_ways_against_the_hdf5_filter(tmp_path: Path, dtype: type, sig: tuple[int, int]) -> None:
    frames = random_frames(1, 3, dtype, sig)
    bits = np.dtype(dtype).itemsize * 8
    filt = hdf5plugin.Bitshuffle(cname="lz4")
    for blob, frame in zip(filter_chunks(tmp_path, frames, filt), frames, strict=True):
        np.testing.assert_array_equal(decode(blob, f"bs{bits}-lz4<", dtype, frame.size).reshape(sig), frame)
    ours = [encode(f, f"bs{bits}-lz4<") for f in frames]
    np.testing.assert_array_equal(filter_decoded(tmp_path, ours, frames, filt), frames)


def lz4_filter_chunk(blob: bytes, nbytes: int) -> bytes:
    """A raw LZ4 block wrapped as the HDF5 LZ4 filter's chunk of one block."""
    return struct.pack(">QI", nbytes, nbytes) + struct.pack(">I", len(blob)) + blob


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_lz4_both_ways_against_the_hdf5_filter(tmp_path: Path, dtype: type) -> None:
    frames = random_frames(2, 3, dtype, (37, 41))
    filt = hdf5plugin.LZ4(nbytes=0)
    for chunk, frame in zip(filter_chunks(tmp_path, frames, filt), frames, strict=True):
        (total, block), (size,) = struct.unpack(">QI", chunk[:12]), struct.unpack(">I", chunk[12:16])
        assert total == frame.nbytes and block >= total, "expected one LZ4 block per chunk"
        np.testing.assert_array_equal(decode(chunk[16 : 16 + size], "lz4<", dtype, frame.size).reshape(37, 41), frame)
    ours = [lz4_filter_chunk(encode(f, "lz4<"), f.nbytes) for f in frames]
    np.testing.assert_array_equal(filter_decoded(tmp_path, ours, frames, filt), frames)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_uncompressed_is_little_endian_pixels(dtype: type) -> None:
    frame = random_frames(3, 1, dtype)[0]
    blob = frame.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    assert encode(frame, "<") == blob
    np.testing.assert_array_equal(decode(blob, "<", dtype, frame.size).reshape(frame.shape), frame)


def test_bad_blobs_are_errors_that_name_the_frame() -> None:
    frame = random_frames(4, 1)[0]
    blob = encode(frame, "bs16-lz4<")
    with pytest.raises(DetectorProtocolError, match=r"frame 7: the bitshuffle-LZ4 header says 1536 bytes"):
        decode(blob, "bs16-lz4<", np.uint16, 700, "scan, frame 7")
    corrupt = blob[:16] + b"\xff" * 24 + blob[40:]  # the block lengths are right, the LZ4 data is not
    with pytest.raises(DetectorProtocolError, match="frame 3: the bitshuffle-LZ4 blob does not decode"):
        decode(corrupt, "bs16-lz4<", np.uint16, frame.size, "scan, frame 3")
    import struct as st

    big = random_frames(4, 1, sig=(64, 129))[0]  # two whole blocks, a short one, and 8256 % 8 = 0 plain pixels
    blob = encode(big, "bs16-lz4<")
    total, block = st.unpack(">QI", blob[:12])
    for bad in (st.pack(">QI", total, block // 2) + blob[12:], blob[:-7], blob + b"\x00"):  # lengths that lie
        with pytest.raises(DetectorProtocolError, match="blob of .* bytes does not hold .* blocks.*corrupt"):
            decode(bad, "bs16-lz4<", np.uint16, big.size)
    with pytest.raises(DetectorProtocolError, match="lz4 blob does not decode"):
        decode(b"\xff" * 40, "lz4<", np.uint16, frame.size)
    with pytest.raises(DetectorProtocolError, match="encoding 'zstd' is not one of"):
        decode(blob, "zstd", np.uint16, frame.size)
    with pytest.raises(DetectorProtocolError, match="is 1536 bytes; got 10"):
        decode(b"x" * 10, "<", np.uint16, frame.size)


@pytest.mark.parametrize("encoding", ["bs16-lz4<", "lz4<", "<"])
def test_encoded_frames_reader_reads_any_pixel_range(encoding: str) -> None:
    frames = random_frames(6, 5)
    blobs = [encode(f, encoding) for f in frames]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
    payload = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    fsize = frames[0].size
    base = 10 * fsize  # the partition starts at frame 10 of the acquisition
    reader = EncodedFramesReader(ArrayReader(payload), offsets, encoding=encoding, dtype=np.dtype(np.uint16),
                                 frame_size=fsize, base=base, total=100 * fsize)
    flat = frames.reshape(-1)
    for lo, hi in [(0, 5 * fsize), (fsize, 3 * fsize), (17, 2 * fsize + 5), (4 * fsize, 5 * fsize)]:
        np.testing.assert_array_equal(reader.read_pixels(base + lo, base + hi), flat[lo:hi])
    with pytest.raises(IndexError):
        reader.read_pixels(base - 1, base + 1)


def test_each_decoding_thread_runs_bitshuffle_on_one_openmp_thread() -> None:
    """OpenMP's thread count is per thread: every thread that decodes sets its own (the threads of
    several workers spinning against each other made decoding hundreds of times slower)."""
    import threading

    from threadpoolctl import ThreadpoolController

    frame = random_frames(14, 1, sig=(256, 256))[0]
    blob = encode(frame, "bs16-lz4<")
    seen: list[list[int]] = []

    def decode_here() -> None:
        np.testing.assert_array_equal(decode(blob, "bs16-lz4<", np.uint16, frame.size), frame.reshape(-1))
        libs = [lib for lib in ThreadpoolController().lib_controllers if "bitshuffle" in lib.filepath]
        seen.append([lib.num_threads for lib in libs])

    threads = [threading.Thread(target=decode_here) for _ in range(2)]
    for t in threads:
        t.start()
        t.join(60)
    assert seen == [[1], [1]]


def _reader(blobs: list[bytes], dtype: type, fsize: int, encoding: str) -> EncodedFramesReader:
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    payload = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    return EncodedFramesReader(ArrayReader(payload), offsets, encoding=encoding, dtype=np.dtype(dtype),
                               frame_size=fsize, base=0, total=len(blobs) * fsize)


@pytest.mark.parametrize("sig", SIGS, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_the_tile_kernel_decodes_the_hdf5_filters_chunks(tmp_path: Path, dtype: type, sig: tuple[int, int]) -> None:
    """The reader decodes a tile of frames in one kernel call: frames the HDF5 filter wrote, read whole
    and in ranges that start and end inside frames."""
    from detflow.sources.live.dectris.kernels import c_routines

    assert c_routines() is not None, "the bitshuffle extension exports the kernel's C routines"
    frames = random_frames(15, 5, dtype, sig)
    bits = np.dtype(dtype).itemsize * 8
    reader = _reader(filter_chunks(tmp_path, frames, hdf5plugin.Bitshuffle(cname="lz4")), dtype, frames[0].size,
                     f"bs{bits}-lz4<")
    flat, fsize = frames.reshape(-1), frames[0].size
    for lo, hi in [(0, 5 * fsize), (fsize + 3, 4 * fsize - 1), (4 * fsize, 5 * fsize)]:
        np.testing.assert_array_equal(reader.read_pixels(lo, hi), flat[lo:hi])


def test_a_bad_blob_inside_a_tile_names_its_frame() -> None:
    import struct as st

    frames = random_frames(16, 4, sig=(64, 129))  # two whole blocks and a short one per frame
    good = [encode(f, "bs16-lz4<") for f in frames]
    fsize = frames[0].size
    total, block = st.unpack(">QI", good[2][:12])
    lz4_garbage = good[2][:16] + b"\xff" * 24 + good[2][40:]
    cases = {
        "does not hold .* blocks.*corrupt": [st.pack(">QI", total, block // 2) + good[2][12:], good[2][:-7],
                                             good[2] + b"\x00", st.pack(">QI", total, 2**20) + good[2][12:]],
        "header says 1 bytes": [st.pack(">QI", 1, block) + good[2][12:]],
        "blob does not decode": [lz4_garbage],
        "no 12-byte header": [b"\x00" * 5],
    }
    for message, bads in cases.items():
        for bad in bads:
            reader = _reader([good[0], good[1], bad, good[3]], np.uint16, fsize, "bs16-lz4<")
            np.testing.assert_array_equal(reader.read_pixels(0, 2 * fsize), frames[:2].reshape(-1))
            with pytest.raises(DetectorProtocolError, match=f"frame 2: .*{message}"):
                reader.read_pixels(0, 4 * fsize)
            np.testing.assert_array_equal(reader.read_pixels(3 * fsize, 4 * fsize), frames[3].reshape(-1))


def test_blocks_larger_than_the_kernels_buffer_are_decoded_too() -> None:
    """A detector may choose a block size: 32768 uint16 pixels (64 KiB) is more than the kernel takes;
    such frames are decoded one by one, in the middle of a tile of ordinary ones."""
    import bitshuffle

    frames = random_frames(17, 3, sig=(256, 256))
    big = struct.pack(">QI", frames[1].nbytes, 2**17) + bitshuffle.compress_lz4(frames[1].reshape(-1), 2**16).tobytes()
    blobs = [encode(frames[0], "bs16-lz4<"), big, encode(frames[2], "bs16-lz4<")]
    reader = _reader(blobs, np.uint16, frames[0].size, "bs16-lz4<")
    np.testing.assert_array_equal(reader.read_pixels(0, 3 * frames[0].size), frames.reshape(-1))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_lz4_in_hdf5_framing_both_ways_against_the_hdf5_filter(tmp_path: Path, dtype: type) -> None:
    """The CBOR stream's ``lz4``: blocks of 1 KiB (several per image, the last one short) from the filter."""
    frames = random_frames(18, 3, dtype, (37, 41))
    for filt in (hdf5plugin.LZ4(nbytes=1024), hdf5plugin.LZ4(nbytes=0)):
        for chunk, frame in zip(filter_chunks(tmp_path, frames, filt), frames, strict=True):
            np.testing.assert_array_equal(decode(chunk, "lz4-h5", dtype, frame.size).reshape(37, 41), frame)
    ours = [encode(f, "lz4-h5") for f in frames]
    np.testing.assert_array_equal(filter_decoded(tmp_path, ours, frames, hdf5plugin.LZ4(nbytes=0)), frames)
    blob = ours[0]
    for bad, message in [(blob[:-1], "runs past"), (blob + b"\x00", "follow the last lz4 block"),
                         (blob[:12], "ends before its block"), (blob[:8], "no 12-byte header")]:
        with pytest.raises(DetectorProtocolError, match=message):
            decode(bad, "lz4-h5", dtype, frames[0].size)
