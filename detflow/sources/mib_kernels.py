"""numba kernels that decode raw (``R64``) Merlin frames.

Imported lazily by :mod:`detflow.sources.mib_decode` (importing numba costs ~0.3 s,
so ``import detflow`` must not pull it in).

Every kernel takes ``buf``, a 1-D uint64 view of ``n`` frames' bytes (frame ``f``'s
pixel data starts at word ``first + f * stride``: a memory-mapped file goes in
without a copy, frame headers and all), and writes the decoded frames into ``out``
of shape ``(n, H, W)`` (rows contiguous). A 1-D contiguous buffer, not a strided 2-D
view, so that numba knows every chip row it reads is contiguous and LLVM vectorises.

Within a chip row, pixels come in 8-byte chunks, and each chunk is stored
big-endian with its first pixel in the least significant place:

* R1: bit ``i`` of the big-endian u64 is pixel ``i`` of the chunk (64 pixels);
* R6: pixel ``k`` is byte ``7 - k`` (8 pixels);
* R12: pixel ``k`` is the big-endian u16 in slot ``3 - k`` (4 pixels);
* R24: two R12 frames back to back: bits 23..12 first, then bits 11..0.

So one byte swap of the 64-bit word turns every variant into pixels in natural
order. A chip row stored reversed (the bottom chips of a quad, rotated by 180
degrees) is even simpler: its chunks go out in reverse order, each with its bytes
as stored (R6), its u16s byte-swapped in place (R12, R24) or its bits read from the
top (R1).

A raw frame is ``raw_h`` raw rows (the chip height); each raw row holds ``nseg``
chip rows of ``cw`` pixels one after another (one for a single chip, four for a quad:
``Q4 Q3 Q2 Q1``). Chip row ``q`` of raw row ``r`` lands in image row
``row_base[q] + row_sign[q] * r``, its pixel ``k`` in column ``col0[q] + col_step[q] * k``
with ``col_step`` +1 (forward) or -1 (reversed; see
:meth:`detflow.sources.mib_decode.MibLayout.segment_table`).

Speed: the kernels write whole 8-byte words (unaligned stores, so the odd columns of
a ``2x2G`` frame need no special case), with one branch-free inner loop per
direction that LLVM vectorises; one pass over the data, as for non-raw frames.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

__all__ = ["decode_r1", "decode_r6", "decode_r12", "decode_r24"]

_jit = numba.njit(cache=True, nogil=True)

_M8 = np.uint64(0x00FF00FF00FF00FF)
_M16 = np.uint64(0x0000FFFF0000FFFF)
_LOW16 = np.uint64(0xFFFF)
_ONES = np.uint64(0x0101010101010101)
_SPREAD_REV = np.uint64(0x8040201008040201)


@intrinsic
def _store_u64(typingctx, arr, offset, value):  # pragma: no cover - numba
    """``value`` into the 8 bytes at byte ``offset`` of ``arr``'s data (no alignment needed)."""
    if not isinstance(arr, types.Array):
        return None
    sig = types.void(arr, types.intp, types.uint64)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        base = builder.bitcast(ary.data, ir.IntType(8).as_pointer())
        ptr = builder.bitcast(builder.gep(base, [args[1]], inbounds=True), ir.IntType(64).as_pointer())
        builder.store(args[2], ptr, align=1)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(inline="always")
def _swap16(w):  # pragma: no cover - numba
    """Swap the bytes of each u16 of ``w``."""
    return ((w & _M8) << np.uint64(8)) | ((w >> np.uint64(8)) & _M8)


@numba.njit(inline="always")
def _bswap(w):  # pragma: no cover - numba
    w = _swap16(w)
    w = ((w & _M16) << np.uint64(16)) | ((w >> np.uint64(16)) & _M16)
    return (w << np.uint64(32)) | (w >> np.uint64(32))


@numba.njit(inline="always")
def _row_start(out, f, y, x):  # pragma: no cover - numba
    """Byte offset of pixel ``(f, y, x)`` in ``out``."""
    return f * out.strides[0] + y * out.strides[1] + x * out.itemsize


@numba.njit(inline="always")
def _seg_dest(out, f, r, q, row_base, row_sign, col0, col_step, cw):  # pragma: no cover - numba
    """Byte offset of the leftmost image pixel of chip row ``q`` of raw row ``r``."""
    y = row_base[q] + row_sign[q] * r
    x = col0[q] if col_step[q] > 0 else col0[q] - cw + 1
    return _row_start(out, f, y, x)


@_jit
def decode_r6(buf, first, stride, n, out, row_base, row_sign, col0, col_step, cw, raw_h):  # pragma: no cover - numba
    nseg = row_base.shape[0]
    nw = cw // 8
    for f in range(n):
        base = first + f * stride
        for r in range(raw_h):
            for q in range(nseg):
                d = _seg_dest(out, f, r, q, row_base, row_sign, col0, col_step, cw)
                s = (r * nseg + q) * nw
                src = buf[base + s : base + s + nw]
                if col_step[q] > 0:
                    for m in range(nw):
                        _store_u64(out, d + 8 * m, _bswap(src[m]))
                else:
                    dl = d + 8 * (nw - 1)
                    for m in range(nw):
                        _store_u64(out, dl - 8 * m, src[m])


@numba.njit(inline="always")
def _spread(x):  # pragma: no cover - numba
    """Bit ``t`` of the byte ``x`` into byte ``t`` of a u64 (as 0 or 1)."""
    # x in every byte; keep bit t in byte t (_SPREAD_REV has bit t set in byte t); adding
    # 0x7F sets bit 7 of a byte exactly when its bit was set (no byte overflows)
    y = ((x * _ONES) & _SPREAD_REV) + np.uint64(0x7F7F7F7F7F7F7F7F)
    return (y >> np.uint64(7)) & _ONES


@_jit
def decode_r12(buf, first, stride, n, out, row_base, row_sign, col0, col_step, cw, raw_h):  # pragma: no cover - numba
    nseg = row_base.shape[0]
    nw = cw // 4
    for f in range(n):
        base = first + f * stride
        for r in range(raw_h):
            for q in range(nseg):
                d = _seg_dest(out, f, r, q, row_base, row_sign, col0, col_step, cw)
                s = (r * nseg + q) * nw
                src = buf[base + s : base + s + nw]
                if col_step[q] > 0:
                    for m in range(nw):
                        _store_u64(out, d + 8 * m, _bswap(src[m]))
                else:
                    dl = d + 8 * (nw - 1)
                    for m in range(nw):
                        _store_u64(out, dl - 8 * m, _swap16(src[m]))


@numba.njit(inline="always")
def _store_r24(out, d, a, b):  # pragma: no cover - numba
    """Four pixels, ``(a_k << 12) | b_k`` for the u16 lanes ``k`` of ``a`` and ``b``, as u32 at ``d``."""
    lo32 = np.uint64(0xFFFF)
    hi32 = np.uint64(0xFFFF00000000)
    a0 = (a & lo32) | ((a << np.uint64(16)) & hi32)
    b0 = (b & lo32) | ((b << np.uint64(16)) & hi32)
    a1 = ((a >> np.uint64(32)) & lo32) | ((a >> np.uint64(16)) & hi32)
    b1 = ((b >> np.uint64(32)) & lo32) | ((b >> np.uint64(16)) & hi32)
    _store_u64(out, d, (a0 << np.uint64(12)) | b0)
    _store_u64(out, d + 8, (a1 << np.uint64(12)) | b1)


@_jit
def decode_r24(buf, first, stride, n, out, row_base, row_sign, col0, col_step, cw, raw_h):  # pragma: no cover - numba
    nseg = row_base.shape[0]
    nw = cw // 4
    half = raw_h * nseg * nw  # words per 12-bit half frame
    for f in range(n):
        base = first + f * stride
        for r in range(raw_h):
            for q in range(nseg):
                d = _seg_dest(out, f, r, q, row_base, row_sign, col0, col_step, cw)
                s = (r * nseg + q) * nw
                hi = buf[base + s : base + s + nw]
                lo = buf[base + half + s : base + half + s + nw]
                if col_step[q] > 0:
                    for m in range(nw):
                        _store_r24(out, d + 16 * m, _bswap(hi[m]), _bswap(lo[m]))
                else:
                    dl = d + 16 * (nw - 1)
                    for m in range(nw):
                        _store_r24(out, dl - 16 * m, _swap16(hi[m]), _swap16(lo[m]))


@numba.njit(inline="always")
def _spread_rev(x):  # pragma: no cover - numba
    """Bit ``7 - t`` of the byte ``x`` into byte ``t`` of a u64 (as 0 or 1)."""
    return ((x * _SPREAD_REV) >> np.uint64(7)) & _ONES


@_jit
def decode_r1(buf, first, stride, n, out, row_base, row_sign, col0, col_step, cw, raw_h):  # pragma: no cover - numba
    nseg = row_base.shape[0]
    nw = cw // 64
    byte = np.uint64(0xFF)
    for f in range(n):
        base = first + f * stride
        for r in range(raw_h):
            for q in range(nseg):
                d = _seg_dest(out, f, r, q, row_base, row_sign, col0, col_step, cw)
                s = (r * nseg + q) * nw
                src = buf[base + s : base + s + nw]
                if col_step[q] > 0:
                    # pixel 8b + t of a chunk: bit t of stored byte 7 - b
                    for m in range(nw):
                        w = src[m]
                        for b in range(8):
                            _store_u64(out, d + 64 * m + 56 - 8 * b, _spread((w >> np.uint64(8 * b)) & byte))
                else:
                    # reversed: output byte 8b + t is bit 7 - t of stored byte b
                    dl = d + 64 * (nw - 1)
                    for m in range(nw):
                        w = src[m]
                        for b in range(8):
                            _store_u64(out, dl - 64 * m + 8 * b, _spread_rev((w >> np.uint64(8 * b)) & byte))
