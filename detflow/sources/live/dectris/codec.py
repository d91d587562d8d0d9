"""DECTRIS image blobs: the encodings of the stream, decoded where the partition is read.

Each image of the DECTRIS stream travels as one blob whose encoding the image's
``dimage_d-1.0`` part names (format notes: ``shared/reference/protocols.md`` 2.2):

* ``bs8-lz4<``, ``bs16-lz4<``, ``bs32-lz4<``: bitshuffle + LZ4 in the chunk layout of
  the HDF5 bitshuffle filter: a 12-byte header (``u64`` BE uncompressed bytes, ``u32``
  BE block size in bytes), then the blocks, each a ``u32`` BE length and an LZ4 block
  of a bit-shuffled block of elements. Decoded with the ``bitshuffle`` package, using
  the block size the header gives (not an assumed default), into the dtype of the
  image's ``type``;
* ``lz4<``: one raw LZ4 block of the little-endian pixels (the ``lz4`` package);
* ``lz4-h5``: the CBOR stream's ``lz4``: LZ4 blocks in the HDF5 LZ4 filter's framing
  (a 12-byte header as above, then per block a ``u32`` BE length and the LZ4 block, or
  the block as it is where the length is its size);
* ``<`` (or an empty encoding): the little-endian pixels as they are.

:data:`DECODERS` maps each encoding to its decoder, :func:`encode` is the inverse (the
simulator's encoder). An unknown encoding, a blob whose size does not match the image
or a corrupt LZ4 stream is a :class:`~detflow.errors.DetectorProtocolError` naming the
frame.

**Where decoding happens.** The receiver does not decode: a live partition carries its
frames' blobs as one byte payload and the offsets of each frame in it
(:class:`EncodedFramesReader`), and the worker process that runs the partition decodes
the frames it reads, tile by tile. So decoding scales with the workers, and only the
compressed bytes cross from the receiving process to the workers. Bitshuffle-LZ4
tiles are decoded by one kernel call for all their frames
(:func:`~.kernels.bslz4_frames`: bitshuffle's LZ4 and bit-transpose routines, no
OpenMP); a frame the kernel does not take (a block larger than its buffer, or a bad
blob) goes through the one-frame decoder, which decodes it or names what is wrong.

**Threads.** The bitshuffle library's own entry point (the one-frame decoder, and the
encoder) parallelises over the blocks of one image with OpenMP; for one 128 KiB
image that costs more than it gains (the threads of several worker processes spin
against each other: measured 10 ms instead of 50 µs per
256x256 frame on 2 cores), so the first decode in each thread limits bitshuffle's
OpenMP runtime to one thread (an OpenMP thread count is a per-thread setting).
Parallelism comes from the workers.
"""

from __future__ import annotations

import math
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detflow.errors import DetectorProtocolError, import_optional
from detflow.sources.base import FrameReader

__all__ = [
    "BSLZ4_ENCODINGS",
    "LZ4_H5",
    "DECODERS",
    "ENCODINGS",
    "EncodedFramesReader",
    "decode",
    "encode",
    "image_dtype",
]

#: the bitshuffle-LZ4 encodings, by element size in bits
BSLZ4_ENCODINGS = {8: "bs8-lz4<", 16: "bs16-lz4<", 32: "bs32-lz4<"}
_BSLZ4_HEADER = struct.Struct(">QI")
#: the name detflow gives the CBOR stream's ``lz4`` (the HDF5 LZ4 filter's framing), which
#: the JSON stream does not have (its ``lz4<`` is one bare LZ4 block)
LZ4_H5 = "lz4-h5"
#: the image ``type`` names of the stream and the dtypes they decode to
_TYPES: dict[str, np.dtype] = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2"), "uint32": np.dtype("<u4"),
          "int8": np.dtype("<i1"), "int16": np.dtype("<i2"), "int32": np.dtype("<i4"), "float32": np.dtype("<f4")}

#: the OpenMP runtimes bitshuffle uses, found once per process; the limit is set per thread
_openmp: list[Any] | None = None
_openmp_lock = threading.Lock()
_local = threading.local()


def image_dtype(type_name: str, where: str = "dectris stream") -> np.dtype:
    """The dtype of an image ``type`` (``"uint16"`` → ``<u2``)."""
    try:
        return _TYPES[type_name]
    except KeyError:
        raise DetectorProtocolError(
            f"{where}: image type {type_name!r} is not one of {', '.join(_TYPES)}"
        ) from None


def _bitshuffle() -> Any:
    global _limited
    bitshuffle = import_optional("bitshuffle", "decoding DECTRIS bitshuffle-LZ4 images")
    if not getattr(_local, "limited", False):
        _limit_openmp()
        _local.limited = True
    return bitshuffle


def _limit_openmp() -> None:
    """One OpenMP thread in this thread for the runtime bitshuffle loaded (see the module docstring).

    ``omp_set_num_threads`` sets the calling thread's value only: every thread that
    decodes (a threaded executor's workers, say) calls this once.
    """
    global _openmp
    with _openmp_lock:
        if _openmp is None:
            from threadpoolctl import ThreadpoolController

            libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "openmp"]
            own = [lib for lib in libs if "bitshuffle" in lib.filepath]
            _openmp = own or libs  # a bitshuffle linked against the system's OpenMP: limit that one
        libs = _openmp
    for lib in libs:
        lib.set_num_threads(1)


def _lz4_block() -> Any:
    return import_optional("lz4.block", "decoding DECTRIS lz4 images")


def _c_bslz4() -> Any:
    """bitshuffle's C entry point ``bshuf_decompress_lz4(in, out, size, elem_size, block_size)``.

    Called through ctypes it decodes straight into the caller's array: no output array
    allocated per image and no copy of it (the Python wrapper has both). ``None`` where
    the extension does not export it; the Python wrapper is used then.
    """
    global _c_decompress
    if _c_decompress is None:
        try:
            import ctypes

            fn = ctypes.CDLL(_bitshuffle().ext.__file__).bshuf_decompress_lz4
            fn.restype = ctypes.c_int64
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]
            _c_decompress = fn
        except (OSError, AttributeError):  # pragma: no cover - a bitshuffle built without exported symbols
            _c_decompress = False
    return _c_decompress or None


_c_decompress: Any = None


def _kernel() -> Any:
    """The tile kernel's C routines (:mod:`.kernels`), or ``None`` (decode frame by frame)."""
    global _kernel_routines
    if _kernel_routines is None:
        import_optional("bitshuffle", "decoding DECTRIS bitshuffle-LZ4 images")
        from detflow.sources.live.dectris.kernels import c_routines

        _kernel_routines = c_routines() or False
    return _kernel_routines or None


_kernel_routines: Any = None


def _decode_bslz4(blob: memoryview, out: np.ndarray, where: str) -> None:
    dtype, count = out.dtype, out.size
    nbytes = count * dtype.itemsize
    if len(blob) < _BSLZ4_HEADER.size:
        raise DetectorProtocolError(f"{where}: a bitshuffle-LZ4 blob of {len(blob)} bytes has no 12-byte header")
    total, block_bytes = _BSLZ4_HEADER.unpack_from(blob)
    if total != nbytes:
        raise DetectorProtocolError(
            f"{where}: the bitshuffle-LZ4 header says {total} bytes, but the image is {count} pixels of "
            f"{dtype.name} ({nbytes} bytes)"
        )
    if block_bytes % dtype.itemsize or (block_bytes // dtype.itemsize) % 8:
        raise DetectorProtocolError(
            f"{where}: the bitshuffle-LZ4 block size {block_bytes} bytes is not a multiple of 8 {dtype.name} "
            "elements"
        )
    block = block_bytes // dtype.itemsize
    _check_blocks(blob, count, dtype.itemsize, block, where)
    bitshuffle = _bitshuffle()
    body = np.frombuffer(blob, dtype=np.uint8, offset=_BSLZ4_HEADER.size)
    fn = _c_bslz4()
    if fn is not None:
        used = fn(body.__array_interface__["data"][0], out.ctypes.data, count, dtype.itemsize, block)
        if used != body.size:
            raise DetectorProtocolError(f"{where}: the bitshuffle-LZ4 blob does not decode (bitshuffle error "
                                        f"{used}, {body.size} bytes of blocks)")
        return
    try:  # pragma: no cover - the fallback of _c_bslz4
        out[:] = bitshuffle.decompress_lz4(body, (count,), dtype, block)
    except (RuntimeError, ValueError) as err:  # pragma: no cover
        raise DetectorProtocolError(f"{where}: the bitshuffle-LZ4 blob does not decode: {err}") from err


def _check_blocks(blob: memoryview, count: int, itemsize: int, block: int, where: str) -> None:
    """Walk the block lengths of a bitshuffle-LZ4 blob: they must fit it exactly.

    The bitshuffle library trusts them (a length that points past the blob makes it
    read past the buffer), so a corrupt blob off the wire is caught here first.
    """
    tail = count % block
    blocks = count // block + (1 if tail - tail % 8 else 0)
    pos, end = _BSLZ4_HEADER.size, len(blob) - (count % 8) * itemsize
    for _ in range(blocks):
        if pos + 4 > end:
            break
        pos += 4 + int.from_bytes(blob[pos : pos + 4], "big")
    else:
        if pos == end:
            return
    raise DetectorProtocolError(
        f"{where}: the bitshuffle-LZ4 blob of {len(blob)} bytes does not hold {blocks} blocks of {block} "
        f"elements and {count % 8} plain ones: corrupt or cut short"
    )


def _decode_lz4(blob: memoryview, out: np.ndarray, where: str) -> None:
    nbytes = out.nbytes
    try:
        raw = _lz4_block().decompress(blob, uncompressed_size=nbytes)
    except Exception as err:  # lz4.block.LZ4BlockError derives from Exception only
        raise DetectorProtocolError(f"{where}: the lz4 blob does not decode to {nbytes} bytes: {err}") from err
    if len(raw) != nbytes:
        raise DetectorProtocolError(f"{where}: the lz4 blob decodes to {len(raw)} bytes; the image is {nbytes}")
    out[:] = np.frombuffer(raw, dtype=out.dtype)


def _decode_lz4_h5(blob: memoryview, out: np.ndarray, where: str) -> None:
    """LZ4 in the HDF5 LZ4 filter's framing (the stream's CBOR ``lz4``): a 12-byte header
    (``u64`` BE total bytes, ``u32`` BE block bytes), then per block a ``u32`` BE length and
    an LZ4 block, or the block's bytes as they are where that length is the block's size."""
    nbytes = out.nbytes
    if len(blob) < _BSLZ4_HEADER.size:
        raise DetectorProtocolError(f"{where}: an lz4 (HDF5 framing) blob of {len(blob)} bytes has no 12-byte header")
    total, block = _BSLZ4_HEADER.unpack_from(blob)
    if total != nbytes:
        raise DetectorProtocolError(f"{where}: the lz4 header says {total} bytes, but the image is {out.size} pixels "
                                    f"of {out.dtype.name} ({nbytes} bytes)")
    if block <= 0 and nbytes:
        raise DetectorProtocolError(f"{where}: the lz4 header gives a block size of {block} bytes")
    raw = out.view(np.uint8)
    pos, done = _BSLZ4_HEADER.size, 0
    lz4 = _lz4_block()
    while done < nbytes:
        size = min(block, nbytes - done)
        if pos + 4 > len(blob):
            raise DetectorProtocolError(f"{where}: the lz4 blob of {len(blob)} bytes ends before its block at "
                                        f"byte {done} of {nbytes}")
        length = int.from_bytes(blob[pos : pos + 4], "big")
        pos += 4
        if pos + length > len(blob):
            raise DetectorProtocolError(f"{where}: an lz4 block of {length} bytes runs past the blob's "
                                        f"{len(blob)} bytes")
        if length == size:
            raw[done : done + size] = np.frombuffer(blob[pos : pos + length], dtype=np.uint8)
        else:
            try:
                part = lz4.decompress(blob[pos : pos + length], uncompressed_size=size)
            except Exception as err:  # lz4.block.LZ4BlockError derives from Exception only
                raise DetectorProtocolError(f"{where}: an lz4 block does not decode to {size} bytes: {err}") from err
            if len(part) != size:
                raise DetectorProtocolError(f"{where}: an lz4 block decodes to {len(part)} bytes, not {size}")
            raw[done : done + size] = np.frombuffer(part, dtype=np.uint8)
        pos += length
        done += size
    if pos != len(blob):
        raise DetectorProtocolError(f"{where}: {len(blob) - pos} bytes follow the last lz4 block")


def _decode_plain(blob: memoryview, out: np.ndarray, where: str) -> None:
    if len(blob) != out.nbytes:
        raise DetectorProtocolError(
            f"{where}: an uncompressed image of {out.size} {out.dtype.name} pixels is {out.nbytes} bytes; "
            f"got {len(blob)}"
        )
    out[:] = np.frombuffer(blob, dtype=out.dtype)


Decoder = Callable[[memoryview, np.ndarray, str], None]

#: encoding name (as in ``dimage_d-1.0``) → decoder ``(blob, out, where)``, which fills the
#: contiguous 1-D little-endian array ``out`` (its dtype and size are the image's)
DECODERS: dict[str, Decoder] = {
    **{name: _decode_bslz4 for name in BSLZ4_ENCODINGS.values()},
    "lz4<": _decode_lz4,
    LZ4_H5: _decode_lz4_h5,
    "<": _decode_plain,
    "": _decode_plain,
}
#: the encodings :func:`encode` writes
ENCODINGS = (*BSLZ4_ENCODINGS.values(), "lz4<", LZ4_H5, "<")


def decode(blob: bytes | memoryview | np.ndarray, encoding: str, dtype: Any, count: int,
           where: str = "dectris image") -> np.ndarray:
    """One image blob as a flat array of ``count`` pixels of ``dtype``.

    Examples
    --------
    >>> frame = np.arange(64 * 64, dtype=np.uint16)
    >>> blob = encode(frame, "bs16-lz4<")
    >>> len(blob) < frame.nbytes
    True
    >>> bool((decode(blob, "bs16-lz4<", np.uint16, frame.size) == frame).all())
    True
    """
    try:
        decoder = DECODERS[encoding]
    except KeyError:
        raise DetectorProtocolError(
            f"{where}: encoding {encoding!r} is not one of {', '.join(repr(e) for e in DECODERS)}"
        ) from None
    view = memoryview(blob).cast("B")  # type: ignore[arg-type]
    out = np.empty(int(count), dtype=np.dtype(dtype).newbyteorder("<"))
    decoder(view, out, where)
    return out


def encode(frame: np.ndarray, encoding: str) -> bytes:
    """``frame`` as a blob of ``encoding`` (one of :data:`ENCODINGS`), as a DECTRIS detector sends it."""
    data = np.ascontiguousarray(frame, dtype=np.dtype(frame.dtype).newbyteorder("<")).reshape(-1)
    if encoding in BSLZ4_ENCODINGS.values():
        out = _bitshuffle().compress_lz4(data)
        block = _default_block(data.dtype.itemsize) * data.dtype.itemsize
        return _BSLZ4_HEADER.pack(data.nbytes, block) + out.tobytes()
    if encoding == "lz4<":
        return bytes(_lz4_block().compress(data.tobytes(), store_size=False))
    if encoding == LZ4_H5:  # one block, as the HDF5 filter writes an image with its default block size
        body = bytes(_lz4_block().compress(data.tobytes(), store_size=False))
        if len(body) >= data.nbytes:
            body = data.tobytes()
        return _BSLZ4_HEADER.pack(data.nbytes, data.nbytes) + len(body).to_bytes(4, "big") + body
    if encoding in ("<", ""):
        return data.tobytes()
    raise DetectorProtocolError(f"cannot encode images as {encoding!r}; known encodings: {', '.join(ENCODINGS)}")


def _default_block(itemsize: int) -> int:
    """bitshuffle's default block size in elements: 8 KiB, a multiple of 8, at least 128."""
    return max(128, (8192 // itemsize) // 8 * 8)


@dataclass(frozen=True)
class EncodedFramesReader:
    """A :class:`~detflow.sources.base.FrameReader` over the encoded frames of one partition.

    ``payload`` reads the partition's blobs as one flat ``uint8`` stream (an array in
    memory, or a shared-memory segment); frame ``k`` of the partition is bytes
    ``offsets[k]:offsets[k + 1]`` of it, and pixel ``base`` of the acquisition's pixel
    stream is the first pixel of frame 0. Frames are decoded when read, in the
    process that reads them.
    """

    payload: FrameReader = field(repr=False)
    offsets: np.ndarray = field(repr=False)
    encoding: str
    dtype: np.dtype
    frame_size: int
    base: int
    total: int
    where: str = "dectris acquisition"

    @property
    def n_pixels(self) -> int:
        return self.total

    @property
    def count(self) -> int:
        return len(self.offsets) - 1

    def read_pixels(self, start: int, stop: int) -> np.ndarray:
        lo, hi = start - self.base, stop - self.base
        fsize = self.frame_size
        if lo < 0 or hi > self.count * fsize:
            raise IndexError(
                f"pixels {start}:{stop} lie outside this reader's range {self.base}:{self.base + self.count * fsize}"
            )
        if hi <= lo:
            return np.empty(0, dtype=self.dtype)
        first, last = lo // fsize, math.ceil(hi / fsize)
        out = np.empty((last - first) * fsize, dtype=self.dtype)
        offsets = self.offsets
        raw = self.payload.read_pixels(int(offsets[first]), int(offsets[last]))
        origin = int(offsets[first])
        decoder = DECODERS.get(self.encoding)
        if decoder is None:
            decode(b"", self.encoding, self.dtype, fsize, self.where)  # raises, naming the encoding
        assert decoder is not None
        frame0 = self.base // fsize
        if self.encoding in BSLZ4_ENCODINGS.values() and _kernel() is not None:
            from detflow.sources.live.dectris.kernels import bslz4_frames

            flat, itemsize, k = np.asarray(raw).view(np.uint8).reshape(-1), self.dtype.itemsize, first
            while k < last:
                got = bslz4_frames(flat[int(offsets[k]) - origin :], offsets, k, last,
                                   out[(k - first) * fsize :].view(np.uint8), fsize, itemsize)
                if got >= 0:
                    break
                # frame -got - 1 is one the kernel does not take: the one-frame decoder decodes it
                # (a block larger than the kernel's buffer) or says what is wrong with it
                k = -got - 1
                pos = (k - first) * fsize
                blob = memoryview(raw)[int(offsets[k]) - origin : int(offsets[k + 1]) - origin]  # type: ignore[arg-type]
                decoder(blob, out[pos : pos + fsize], f"{self.where}, frame {frame0 + k}")
                k += 1
            return out[lo - first * fsize : hi - first * fsize]
        view = memoryview(raw)  # type: ignore[arg-type]
        for k in range(first, last):
            blob = view[int(offsets[k]) - origin : int(offsets[k + 1]) - origin]
            pos = (k - first) * fsize
            decoder(blob, out[pos : pos + fsize], f"{self.where}, frame {frame0 + k}")
        return out[lo - first * fsize : hi - first * fsize]

    def restrict(self, start: int, stop: int) -> EncodedFramesReader:
        return self
