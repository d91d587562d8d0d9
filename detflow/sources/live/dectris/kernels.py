"""The bitshuffle-LZ4 decoding kernel: the frames of a tile in one call, no OpenMP.

bitshuffle's own ``bshuf_decompress_lz4`` decodes one image per call and runs its
blocks in an OpenMP parallel region, with a scratch buffer allocated per block; for
a 256x256 image (16 blocks of 8 KiB) that overhead, a ctypes call per image and the
Python walk over the block lengths that must precede it (the library trusts them)
cost about as much as the decoding itself. This kernel walks the blocks of every
frame of a tile in numba and hands each block to the two C routines of the
``bitshuffle`` extension that do the work: ``LZ4_decompress_safe`` (which never reads
past the length it is given nor writes past the block) and
``bshuf_untrans_bit_elem`` (the bit transpose, SIMD where the CPU has it). Measured
on the 2-core development machine: about 110 µs a frame against 190 µs.

The C routines are called through their addresses, which are arguments of the
kernel (:func:`_call4`), so the compiled kernel holds no process-specific pointer
and numba caches it on disk like the other kernels.

Checks, per frame, before any byte is decoded from it: the 12-byte header's total
size is the image's and its block size a positive multiple of 8 elements; each
block's length lies inside the blob; each block decodes to exactly its size; the
blocks and the plain tail end exactly at the end of the blob. A frame that fails
makes the kernel return ``-(k + 1)`` for its index ``k`` (the caller names the
frame and the reason).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["bslz4_frames", "c_routines"]


@intrinsic
def _call4(typingctx: Any, fn: Any, a: Any, b: Any, c: Any, d: Any) -> Any:  # pragma: no cover - numba
    """``(int64) fn(void *a, void *b, size_t c, size_t d)``, ``fn`` an address (``bshuf_untrans_bit_elem``)."""
    sig = types.int64(types.intp, types.intp, types.intp, types.intp, types.intp)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.call(_fnptr(builder, args[0], 64, 64), [builder.inttoptr(args[1], _I8P),
                                                               builder.inttoptr(args[2], _I8P), args[3], args[4]])

    return sig, codegen


@intrinsic
def _call4_int(typingctx: Any, fn: Any, a: Any, b: Any, c: Any, d: Any) -> Any:  # pragma: no cover - numba
    """``(int) fn(void *a, void *b, int c, int d)``, ``fn`` an address (``LZ4_decompress_safe``)."""
    sig = types.int64(types.intp, types.intp, types.intp, types.intp, types.intp)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        res = builder.call(_fnptr(builder, args[0], 32, 32), [builder.inttoptr(args[1], _I8P),
                                                              builder.inttoptr(args[2], _I8P),
                                                              builder.trunc(args[3], i32), builder.trunc(args[4], i32)])
        return builder.sext(res, ir.IntType(64))

    return sig, codegen


_I8P = ir.IntType(8).as_pointer()


def _fnptr(builder: Any, address: Any, result_bits: int, arg_bits: int) -> Any:  # pragma: no cover - numba
    fnty = ir.FunctionType(ir.IntType(result_bits), [_I8P, _I8P, ir.IntType(arg_bits), ir.IntType(arg_bits)])
    return builder.inttoptr(address, fnty.as_pointer())


@numba.njit(cache=True, nogil=True, inline="always")
def _be(buf: np.ndarray, pos: int, n: int) -> int:  # pragma: no cover - numba
    """The big-endian unsigned integer of bytes ``pos:pos + n``."""
    value = 0
    for i in range(n):
        value = (value << 8) | int(buf[pos + i])
    return value


@numba.njit(cache=True, nogil=True)
def _frames(payload: np.ndarray, offsets: np.ndarray, first: int, last: int, out: np.ndarray, fsize: int,
            itemsize: int, scratch: np.ndarray, lz4: int, untrans: int) -> int:  # pragma: no cover - numba
    src0 = payload.ctypes.data
    dst0 = out.ctypes.data
    tmp = scratch.ctypes.data
    fbytes = fsize * itemsize
    origin = offsets[first]
    plain = fsize % 8
    for k in range(first, last):
        lo = offsets[k] - origin
        size = offsets[k + 1] - offsets[k]
        dst = dst0 + (k - first) * fbytes
        if size < 12 or _be(payload, lo, 8) != fbytes:
            return -(k + 1)
        block_bytes = _be(payload, lo + 8, 4)
        block = block_bytes // itemsize
        if block <= 0 or block_bytes % itemsize or block % 8 or block_bytes > scratch.size:
            return -(k + 1)
        end = size - plain * itemsize
        pos = 12
        done = 0
        while done < fsize - plain:
            n = min(block, fsize - done)
            n -= n % 8
            if pos + 4 > end:
                return -(k + 1)
            length = _be(payload, lo + pos, 4)
            pos += 4
            if length > end - pos:
                return -(k + 1)
            if _call4_int(lz4, src0 + lo + pos, tmp, length, n * itemsize) != n * itemsize:  # type: ignore[call-arg]
                return -(k + 1)
            if _call4(untrans, tmp, dst + done * itemsize, n, itemsize) < 0:
                return -(k + 1)
            pos += length
            done += n
        if pos != end:
            return -(k + 1)
        for j in range(plain * itemsize):
            out[(k - first) * fbytes + done * itemsize + j] = payload[lo + pos + j]
    return last - first


_routines: tuple[int, int] | None = None


def c_routines() -> tuple[int, int] | None:
    """Addresses of ``LZ4_decompress_safe`` and ``bshuf_untrans_bit_elem`` in the
    ``bitshuffle`` extension; ``None`` where it does not export them."""
    global _routines
    if _routines is None:
        import bitshuffle.ext

        try:
            lib = ctypes.CDLL(bitshuffle.ext.__file__)
            lz4, untrans = (ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0
                            for name in ("LZ4_decompress_safe", "bshuf_untrans_bit_elem"))
        except (OSError, AttributeError):  # pragma: no cover - a build without exported symbols
            lz4 = untrans = 0
        _routines = (lz4, untrans)
    return _routines if _routines[0] and _routines[1] else None


def bslz4_frames(payload: np.ndarray, offsets: np.ndarray, first: int, last: int, out: np.ndarray,
                 frame_size: int, itemsize: int) -> int:
    """Decode frames ``first:last`` (blobs ``offsets[k]:offsets[k + 1]`` of ``payload``,
    whose byte 0 is ``offsets[first]``) into the flat ``uint8`` array ``out``.

    Returns ``last - first``, or ``-(k + 1)`` where frame ``k`` is not a valid blob of
    ``frame_size`` elements of ``itemsize`` bytes (frames before it are decoded).
    The caller checks that :func:`c_routines` is not ``None``.
    """
    routines = c_routines()
    assert routines is not None
    if out.size < (last - first) * frame_size * itemsize:
        raise ValueError(f"out holds {out.size} bytes, not {last - first} frames of {frame_size * itemsize}")
    if payload.size < offsets[last] - offsets[first] or not payload.flags.c_contiguous:
        raise ValueError(f"payload must be {offsets[last] - offsets[first]} contiguous bytes; got {payload.size}")
    scratch = _scratch()
    return int(_frames(payload, offsets, first, last, out, frame_size, itemsize, scratch, routines[0], routines[1]))


def _scratch() -> np.ndarray:
    """This thread's buffer for one decompressed block; larger blocks are refused (64 KiB:
    bitshuffle's default block is 8 KiB, and DECTRIS detectors use the default)."""
    buf: np.ndarray | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = np.empty(2**16, dtype=np.uint8)
    return buf


_local = threading.local()
