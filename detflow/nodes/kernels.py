"""numba kernels of the built-in UDFs.

Importing numba costs about 0.3 s, so this module is imported only from inside
``process_tile`` / ``merge`` of the UDFs that use it, never when ``detflow`` or a UDF
module is imported.

Conventions: every kernel takes a tile flattened to ``(n_frames, n_pixels)`` in the
dtype it arrived in (numba compiles one specialisation per dtype and caches it on
disk), adds into output arrays the caller owns, and compiles with
``fastmath=False``: results are reproducible and NaN/inf behave as in numpy. Without
fastmath, LLVM will not reorder a floating-point sum, so reductions along the pixel
axis keep :data:`LANES` independent partial sums to let it vectorise them anyway.

Dense mask products and the log of :class:`~detflow.nodes.logsum.LogsumUDF` are *not*
here: measured on a ``(32, 65536)`` uint16 tile, conversion plus BLAS ``sgemm`` and
numpy's SIMD ``log`` beat numba loops by 1.5x to 20x.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = [
    "LANES",
    "class_sums",
    "class_sums_parallel",
    "combine_sparse",
    "csr_rows_dot",
    "dense_rows_dot32",
    "dense_rows_dot64",
    "row_hashes",
    "rows_match",
    "shifted_moments",
    "sum_frames",
    "sum_pixels_float",
    "sum_pixels_int",
]

#: independent partial sums used by reductions along the pixel axis
LANES = 16

_jit = numba.njit(cache=True, nogil=True, fastmath=False)


@_jit
def sum_frames(tile: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - numba
    """``out[p] += sum_f tile[f, p]``, accumulating in ``out``'s dtype."""
    n, npix = tile.shape
    for f in range(n):
        for p in range(npix):
            out[p] += tile[f, p]


@_jit
def sum_pixels_float(tile: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - numba
    """``out[f] += sum_p tile[f, p]`` in float64 with :data:`LANES` partial sums."""
    n, npix = tile.shape
    nb = npix // LANES
    acc = np.zeros(LANES, dtype=np.float64)
    for f in range(n):
        acc[:] = 0.0
        for b in range(nb):
            base = b * LANES
            for j in range(LANES):
                acc[j] += tile[f, base + j]
        s = 0.0
        for j in range(LANES):
            s += acc[j]
        for p in range(nb * LANES, npix):
            s += tile[f, p]
        out[f] += s


@_jit
def sum_pixels_int(tile: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - numba
    """``out[f] += sum_p tile[f, p]`` for integer tiles, exact in int64."""
    n, npix = tile.shape
    for f in range(n):
        s = np.int64(0)
        for p in range(npix):
            s += np.int64(tile[f, p])
        out[f] += s


@_jit
def shifted_moments(
    tile: np.ndarray, shift: np.ndarray, s1: np.ndarray, s2: np.ndarray
) -> None:  # pragma: no cover - numba
    """Per pixel, ``s1 += sum_f (x - shift)`` and ``s2 += sum_f (x - shift)**2`` in float64.

    The shifted-data algorithm: with ``shift`` a sample of the same pixel (the first
    frame the partition saw), ``s2 - s1**2 / n`` is the sum of squared deviations
    without the cancellation of the naive ``sum(x**2) - sum(x)**2 / n``. Four frames
    are folded into each update of the accumulators, so the loop over pixels does one
    load and store of ``s1``/``s2`` per four input values and vectorises (8x faster
    than one frame per update, measured on a (32, 65536) uint16 tile).
    """
    n, npix = tile.shape
    n4 = n - n % 4
    for f in range(0, n4, 4):
        for p in range(npix):
            sh = shift[p]
            d0 = np.float64(tile[f, p]) - sh
            d1 = np.float64(tile[f + 1, p]) - sh
            d2 = np.float64(tile[f + 2, p]) - sh
            d3 = np.float64(tile[f + 3, p]) - sh
            s1[p] += (d0 + d1) + (d2 + d3)
            s2[p] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
    for f in range(n4, n):
        for p in range(npix):
            d = np.float64(tile[f, p]) - shift[p]
            s1[p] += d
            s2[p] += d * d


# Reassociation lets LLVM split each frame's dot product into vector lanes; the sums
# are then taken in a different order than a sequential loop, as BLAS does too.
_jit_reduce = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})


@_jit_reduce
def dense_rows_dot32(tile: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out[f, m] += sum_p tile[f, p] * rows[m, p]``, in float32 like an sgemm.

    Register-blocked like a small matrix product: two frames times four masks per pass
    over the pixels, so every mask element loaded serves two frames and every pixel
    four masks (16 masks on 256 x 256 uint16 frames: 29 us a frame, against 66 for one
    mask and frame at a time and 50 for conversion + BLAS, one core). The tile is read
    in its native dtype and nothing is allocated, so concurrent threads do not contend
    for the allocator. A last odd frame or mask is computed as a duplicate and dropped.
    """
    n, npix = tile.shape
    n_masks = rows.shape[0]
    for f in range(0, n, 2):
        g = min(f + 1, n - 1)
        for m in range(0, n_masks, 4):
            m1, m2, m3 = min(m + 1, n_masks - 1), min(m + 2, n_masks - 1), min(m + 3, n_masks - 1)
            r0, r1, r2, r3 = rows[m], rows[m1], rows[m2], rows[m3]
            a0 = a1 = a2 = a3 = np.float32(0.0)
            b0 = b1 = b2 = b3 = np.float32(0.0)
            for p in range(npix):
                x = np.float32(tile[f, p])
                y = np.float32(tile[g, p])
                w0, w1, w2, w3 = r0[p], r1[p], r2[p], r3[p]
                a0 += x * w0
                a1 += x * w1
                a2 += x * w2
                a3 += x * w3
                b0 += y * w0
                b1 += y * w1
                b2 += y * w2
                b3 += y * w3
            _add4(out, f, m, m1, m2, m3, a0, a1, a2, a3)
            if g > f:
                _add4(out, g, m, m1, m2, m3, b0, b1, b2, b3)


@_jit
def _add4(out: np.ndarray, f: int, m: int, m1: int, m2: int, m3: int, s0: Any, s1: Any, s2: Any, s3: Any) -> None:
    out[f, m] += s0
    if m1 > m:
        out[f, m1] += s1
    if m2 > m1:
        out[f, m2] += s2
    if m3 > m2:
        out[f, m3] += s3


@_jit_reduce
def dense_rows_dot64(tile: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """As :func:`dense_rows_dot32`, in float64."""
    n, npix = tile.shape
    for f in range(n):
        for m in range(rows.shape[0]):
            s = 0.0
            for p in range(npix):
                s += np.float64(tile[f, p]) * rows[m, p]
            out[f, m] += s


@_jit
def csr_rows_dot(
    tile: np.ndarray, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - numba
    """``out[f, k] += sum_j tile[f, indices[j]] * data[j]`` over mask ``k``'s CSR row.

    Only the pixels a sparse mask covers are read, and the tile is never converted
    as a whole; sums are taken in float64.
    """
    n = tile.shape[0]
    m = indptr.shape[0] - 1
    for f in range(n):
        for k in range(m):
            s = 0.0
            for j in range(indptr[k], indptr[k + 1]):
                s += tile[f, indices[j]] * data[j]
            out[f, k] += s


# --- class accumulation for ApplyMasksUDF (detflow.nodes.mask_plan) -----------------
#
# Binary or few-valued masks split the pixels into few classes of equal membership.
# Each frame's class sums are taken over runs of same-class pixels (contiguous slices
# of the flat frame), so a run is one vectorised loop and pixels in no mask are never
# read. ``zero`` fixes the accumulator of a run: int64 for integer tiles (exact, and
# integer sums vectorise without reassociation), float32 for float32 tiles (vectorised
# by reassociation, as BLAS would), float64 otherwise. Runs add into float64 class sums.


@_jit_reduce
def _frame_class_sums(
    tile: np.ndarray, f: int, starts: np.ndarray, stops: np.ndarray, labels: np.ndarray, zero: Any, out: np.ndarray
) -> None:  # pragma: no cover - numba
    for r in range(starts.shape[0]):
        s = zero
        for p in range(starts[r], stops[r]):
            s += tile[f, p]
        out[f, labels[r]] += s


@_jit_reduce
def class_sums(
    tile: np.ndarray, starts: np.ndarray, stops: np.ndarray, labels: np.ndarray, zero: Any, out: np.ndarray
) -> None:  # pragma: no cover - numba
    """``out[f, labels[r]] += sum(tile[f, starts[r]:stops[r]])`` for every run ``r``."""
    for f in range(tile.shape[0]):
        _frame_class_sums(tile, f, starts, stops, labels, zero, out)


@numba.njit(cache=True, nogil=True, parallel=True, fastmath={"reassoc", "contract"})
def class_sums_parallel(
    tile: np.ndarray, starts: np.ndarray, stops: np.ndarray, labels: np.ndarray, zero: Any, out: np.ndarray
) -> None:  # pragma: no cover - numba
    """:func:`class_sums` with the frames spread over numba's threads (``prange``)."""
    for f in numba.prange(tile.shape[0]):
        _frame_class_sums(tile, f, starts, stops, labels, zero, out)


@_jit
def row_hashes(bits: np.ndarray, mult: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - numba
    """``out[p] = sum_m bits[p, m] * mult[m]`` in wrapping uint64: equal rows, equal hashes."""
    for p in range(bits.shape[0]):
        h = np.uint64(0)
        for m in range(bits.shape[1]):
            h += np.uint64(bits[p, m]) * mult[m]
        out[p] = h


@_jit
def rows_match(weights: np.ndarray, rep: np.ndarray) -> bool:  # pragma: no cover - numba
    """Whether every row ``p`` of ``weights`` equals row ``rep[p]`` (its class's first pixel)."""
    for p in range(weights.shape[0]):
        q = rep[p]
        if q != p:
            for m in range(weights.shape[1]):
                if weights[p, m] != weights[q, m]:
                    return False
    return True


@_jit
def combine_sparse(
    sums: np.ndarray, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - numba
    """``out[f, indices[j]] += sums[f, c] * data[j]`` over class ``c``'s CSR row of weights.

    The class sums of disjoint masks (sectors, segments) meet a weights matrix with one
    entry per class: this costs one product per entry, where BLAS would multiply the
    whole ``(n_classes, n_masks)`` matrix.
    """
    for f in range(sums.shape[0]):
        for c in range(sums.shape[1]):
            s = sums[f, c]
            if s != 0.0:
                for j in range(indptr[c], indptr[c + 1]):
                    out[f, indices[j]] += s * data[j]
