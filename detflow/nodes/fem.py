"""Fluctuation electron microscopy: the spread of each frame within a ring (LiberTEM's ``FEMUDF``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from detflow.nodes import backends as bk
from detflow.nodes.base import UDF, BufferDecl
from detflow.nodes.masks import circular

__all__ = ["FEMUDF", "run_fem"]


class FEMUDF(UDF):
    """``intensity[i]``: the standard deviation of frame ``i``'s pixels in a ring.

    Parameters
    ----------
    center
        ``(y, x)`` of the ring's centre (LiberTEM reads ``center[1]`` as x).
    rad_in, rad_out
        Inner and outer radius: pixels within ``rad_out`` and not within ``rad_in``.

    Examples
    --------
    >>> res = ctx.run_udf(dataset=ds, udf=FEMUDF(center=(8, 8), rad_in=2, rad_out=6))
    >>> res["intensity"].data.shape == ds.shape.nav
    True
    """

    sig_cut_tiles = False  # whole frames: the kernels read every pixel of a frame at once

    def __init__(self, center: Any, rad_in: float, rad_out: float) -> None:
        super().__init__(center=center, rad_in=rad_in, rad_out=rad_out)

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        return {"intensity": self.buffer(kind="nav", dtype="float32")}

    def get_backends(self) -> Any:
        return bk.BUILTIN_BACKENDS

    def get_task_data(self) -> dict[str, Any]:
        h, w = tuple(self.meta.dataset_shape.sig)
        cy, cx = self.params.center[0], self.params.center[1]
        ring = circular(cx, cy, w, h, self.params.rad_out) & ~circular(cx, cy, w, h, self.params.rad_in)
        return {"pixels": np.flatnonzero(ring)}

    def process_tile(self, tile: Any) -> None:
        if bk.is_sparse(tile):
            tile = bk.dense_tile(tile, tuple(self.meta.dataset_shape.sig))
        flat = tile.reshape((tile.shape[0], -1))[:, self.task_data.pixels]
        self.results.intensity[:] = flat.std(axis=1, dtype=np.float64)


def run_fem(ctx: Any, dataset: Any, center: Any, rad_in: float, rad_out: float, roi: Any = None) -> Any:
    """LiberTEM's ``run_fem``: the results of :class:`FEMUDF`."""
    return ctx.run_udf(dataset=dataset, udf=FEMUDF(center=center, rad_in=rad_in, rad_out=rad_out), roi=roi)
