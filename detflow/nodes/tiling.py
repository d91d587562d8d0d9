"""Tile shapes for tile UDFs: LiberTEM's negotiation of ``get_tiling_preferences()``.

A tile UDF may state a ``depth`` (frames per tile) and a ``total_size`` (bytes per tile
in its input dtype). As in LiberTEM 0.16 (``io/dataset/base/tiling_scheme.py``,
``Negotiator``), the depth is a *hint*, the size a budget:

1. the signal is cut in its last axis' full rows at least (the base shape
   ``(1, ..., 1, sig[-1])``), scaled up to at least ``4 * 4096`` bytes of the raw dtype
   (``DataSet.get_min_sig_size``) so no tile is smaller than a few pages;
2. the depth is the hinted one (32 by default), lowered until that many of those
   minimal tiles fit the budget;
3. the tile then grows, frames first, then signal rows, to fill the budget, never past
   the partition or the frame.

A ``total_size`` of ``TILE_SIZE_BEST_FIT`` is LiberTEM's 1 MiB. A UDF that states
neither (both at their defaults) gets detflow's own tiles: whole frames, as deep as the
runner reads them. A dataset's own tile shape (a memory dataset's ``tileshape``) is the
final word, as LiberTEM's ``MemoryDataSet.adjust_tileshape`` has it.

Unlike LiberTEM, the shape is chosen per UDF: one that asks for small tiles gets them
cut from the tile the runner reads, while the other UDFs of the run keep whole frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from detflow.nodes.base import UDF

__all__ = ["negotiate_tileshape", "sig_subslices"]

#: LiberTEM's size for ``TILE_SIZE_BEST_FIT`` and depth for ``TILE_DEPTH_DEFAULT``
BEST_FIT_BYTES = 2**20
DEFAULT_DEPTH = 32


def _scale(shape: Sequence[int], factors: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(f) * int(s) for f, s in zip(factors, shape, strict=True))


def _scale_factors(shape: Sequence[int], containing: Sequence[int], size: float,
                   min_factors: Sequence[int] | None = None) -> list[int]:
    """Factors that scale ``shape`` towards ``size`` elements inside ``containing`` (LiberTEM's)."""
    factors = [1] * len(shape) if min_factors is None else list(min_factors)
    max_factors = [c // s for s, c in zip(shape, containing, strict=True)]
    rest = max(1.0, size / math.prod(_scale(shape, factors)))
    for i in range(len(shape)):
        factor = max(int(math.floor(rest * factors[i])), factors[i])
        factors[i] = min(factor, max_factors[i])
        rest = max(1, math.floor(size / math.prod(_scale(shape, factors))))
    return factors


def negotiate_tileshape(udf: UDF, sig_shape: Sequence[int], input_dtype: Any, raw_dtype: Any,
                        n_frames: int) -> tuple[int, tuple[int, ...]] | None:
    """``(depth, sig_tile)`` for a tile UDF over partitions of ``n_frames``; ``None`` where
    it states no preference (see the module docstring)."""
    prefs = udf.get_tiling_preferences()
    depth_pref = prefs.get("depth", UDF.TILE_DEPTH_DEFAULT)
    size_pref = prefs.get("total_size", UDF.TILE_SIZE_MAX)
    if depth_pref is UDF.TILE_DEPTH_DEFAULT and size_pref is UDF.TILE_SIZE_BEST_FIT:
        return None
    sig = tuple(int(s) for s in sig_shape)
    n_frames = max(1, int(n_frames))
    itemsize = np.dtype(input_dtype).itemsize
    if depth_pref is UDF.TILE_DEPTH_DEFAULT:
        depth = DEFAULT_DEPTH
    elif depth_pref == UDF.TILE_DEPTH_MAX:
        depth = n_frames
    else:
        depth = max(1, int(depth_pref))
    depth = min(depth, n_frames)
    base = (1,) * (len(sig) - 1) + (sig[-1],)
    size = BEST_FIT_BYTES if size_pref is UDF.TILE_SIZE_BEST_FIT else size_pref
    size = min(size, itemsize * n_frames * math.prod(sig))  # no tile beyond the partition
    size = max(size, itemsize * math.prod(base))
    size_px = int(size // itemsize)
    min_sig_px = 4 * 4096 // np.dtype(raw_dtype).itemsize
    min_factors = _scale_factors(base, sig, min_sig_px)
    min_base = _scale(base, min_factors)
    depth = min(depth, max(1, size_px // math.prod(min_base)))
    factors = _scale_factors((1, *base), (n_frames, *sig), size_px, (depth, *min_factors))
    shape = _scale((1, *base), factors)
    return shape[0], shape[1:]


def sig_subslices(sig_shape: Sequence[int], sig_tile: Sequence[int]) -> list[tuple[slice, ...]]:
    """The signal cut into tiles of ``sig_tile`` (smaller at the far edges), in C order."""
    ranges = [[slice(o, min(o + t, s)) for o in range(0, s, max(1, t))]
              for s, t in zip(sig_shape, sig_tile, strict=True)]
    out: list[tuple[slice, ...]] = [()]
    for axis in ranges:
        out = [(*prefix, sl) for prefix in out for sl in axis]
    return out
