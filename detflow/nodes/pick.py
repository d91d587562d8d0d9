"""Pick whole frames (LiberTEM's ``PickUDF``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from detflow.errors import UDFError
from detflow.nodes import backends as bk
from detflow.nodes.base import UDF, BufferDecl, UDFData

__all__ = ["PickUDF"]


class PickUDF(UDF):
    """Copy the frames in the ROI, in their native dtype, into ``intensity``.

    ``intensity`` is a ``single`` buffer shaped ``(n_roi, *sig_shape)``, frames in ROI
    order (flat nav order of the selected positions). Without a ROI it holds every
    frame, shaped ``nav_shape + sig_shape`` as in LiberTEM; each partition then sends
    a dataset-sized buffer to the merge, so use a small ROI on large data.

    Examples
    --------
    >>> roi = np.zeros(ds.shape.nav, dtype=bool); roi[2, 3] = True
    >>> res = ctx.run_udf(dataset=ds, udf=PickUDF(), roi=roi)
    >>> res["intensity"].data.shape == (1, *ds.shape.sig)
    True
    """

    sig_cut_tiles = False  # whole frames: the kernels read every pixel of a frame at once

    params_spec = ()

    def __init__(self) -> None:
        super().__init__()

    def get_preferred_input_dtype(self) -> Any:
        return self.USE_NATIVE_DTYPE

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        sig = tuple(self.meta.sig_shape)
        roi = self.meta.roi
        nav = tuple(self.meta.nav_shape) if roi is None else (int(np.count_nonzero(roi)),)
        dtype = self.meta.input_dtype
        return {"intensity": self.buffer(kind="single", extra_shape=nav + sig, dtype=dtype)}

    def get_task_data(self) -> dict[str, Any]:
        roi = self.meta.roi
        valid = None if roi is None else roi.reshape(-1)
        # position of each flat nav index among the selected frames (-1: not selected)
        order = None if valid is None else np.cumsum(valid, dtype=np.int64) - 1
        return {"order": order}

    def _targets(self, n: int) -> np.ndarray:
        meta = self.meta
        if meta.coordinates is not None:
            coords = np.asarray(meta.coordinates).reshape(n, -1)
            flat = np.ravel_multi_index(tuple(coords.T), meta.nav_shape)
        elif meta.slice is not None and meta.roi is None:
            flat = np.arange(meta.slice.origin[0], meta.slice.origin[0] + n)
        else:
            raise UDFError("PickUDF needs self.meta.coordinates for the frames of a tile")
        order = self.task_data.order
        return flat if order is None else order[flat]

    def get_backends(self) -> Any:
        """numpy, scipy.sparse and pydata sparse input (sparse tiles are densified: same numbers)."""
        return bk.BUILTIN_BACKENDS

    def process_tile(self, tile: np.ndarray) -> None:
        if bk.is_sparse(tile):
            tile = bk.dense_tile(tile, tuple(self.meta.dataset_shape.sig))
        n = tile.shape[0]
        if n == 0:
            return
        out = self.results.intensity.reshape((-1, *tile.shape[1:]))
        out[self._targets(n)] = tile

    def merge(self, dest: UDFData, src: UDFData) -> None:
        # each partition fills only its own frames and leaves zeros elsewhere
        if dest.intensity.dtype == np.bool_:
            dest.intensity[:] |= src.intensity
        else:
            dest.intensity[:] += src.intensity
