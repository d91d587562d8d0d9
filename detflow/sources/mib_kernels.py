"""numba kernels that decode raw (``R64``) Merlin frames.

Imported lazily by :mod:`detflow.sources.mib_decode` (importing numba costs ~0.3 s,
so ``import detflow`` must not pull it in).

Every kernel takes ``words``, the pixel data of ``n`` frames as a ``(n, data_bytes // 8)``
uint64 view (frame headers already skipped; frames need not be contiguous with each
other, so a strided view of a memory-mapped file goes in without a copy), and writes
the decoded frames into ``out`` of shape ``(n, H, W)``.

Within a chip row, pixels come in 8-byte chunks, and each chunk is stored
big-endian with its first pixel in the least significant place:

* R1: bit ``i`` of the big-endian u64 is pixel ``i`` of the chunk (64 pixels);
* R6: pixel ``k`` is byte ``7 - k`` (8 pixels);
* R12: pixel ``k`` is the big-endian u16 in slot ``3 - k`` (4 pixels);
* R24: two R12 frames back to back: bits 23..12 first, then bits 11..0.

So one byte swap of the 64-bit word turns every variant into pixels in natural
order. For R6 and R12 that swap *is* the decoding, and numpy does it as fast as it
byte-swaps non-raw data (:func:`detflow.sources.mib_decode.decode_frames`); the
kernels here handle the two that need more than a swap: R1 (bits to bytes) and R24
(two words to one value).

A raw frame is ``raw_h`` raw rows (the chip height); each raw row holds ``nseg``
chip rows of ``cw`` pixels one after another (one for a single chip, four for a quad:
``Q4 Q3 Q2 Q1``). Chip row ``q`` of raw row ``r`` lands in image row
``row_base[q] + row_sign[q] * r``, its pixel ``k`` in column ``col0[q] + col_step[q] * k``.
That table expresses both the identity layout of a single chip and the quad layout
with its bottom half rotated by 180 degrees (see
:meth:`detflow.sources.mib_decode.MibLayout.segment_table`).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["decode_r1", "decode_r24"]

_jit = numba.njit(cache=True, nogil=True)


@numba.njit(inline="always")
def _bswap(w):  # pragma: no cover - numba
    w = ((w & np.uint64(0x00FF00FF00FF00FF)) << np.uint64(8)) | ((w >> np.uint64(8)) & np.uint64(0x00FF00FF00FF00FF))
    w = ((w & np.uint64(0x0000FFFF0000FFFF)) << np.uint64(16)) | ((w >> np.uint64(16)) & np.uint64(0x0000FFFF0000FFFF))
    return (w << np.uint64(32)) | (w >> np.uint64(32))


@_jit
def decode_r1(words, out, row_base, row_sign, col0, col_step, cw, raw_h):  # pragma: no cover - numba
    nseg = row_base.shape[0]
    wpc = cw // 64
    one = np.uint64(1)
    for f in range(words.shape[0]):
        for r in range(raw_h):
            for q in range(nseg):
                orow = out[f, row_base[q] + row_sign[q] * r]
                c0 = col0[q]
                s = col_step[q]
                wbase = (r * nseg + q) * wpc
                for j in range(wpc):
                    v = _bswap(words[f, wbase + j])
                    for i in range(64):
                        orow[c0 + s * (j * 64 + i)] = (v >> np.uint64(i)) & one


@_jit
def decode_r24(words, out, row_base, row_sign, col0, col_step, cw, raw_h):  # pragma: no cover - numba
    nseg = row_base.shape[0]
    wpc = cw // 4
    half = words.shape[1] // 2
    mask = np.uint64(0xFFFF)
    for f in range(words.shape[0]):
        for r in range(raw_h):
            for q in range(nseg):
                orow = out[f, row_base[q] + row_sign[q] * r]
                c0 = col0[q]
                s = col_step[q]
                wbase = (r * nseg + q) * wpc
                for j in range(wpc):
                    hi = _bswap(words[f, wbase + j])
                    lo = _bswap(words[f, half + wbase + j])
                    for k in range(4):
                        sh = np.uint64(16 * k)
                        orow[c0 + s * (j * 4 + k)] = (((hi >> sh) & mask) << np.uint64(12)) | ((lo >> sh) & mask)

