"""Sum over each frame (LiberTEM's ``SumSigUDF``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from detflow.nodes import backends as bk
from detflow.nodes.base import UDF, BufferDecl
from detflow.nodes.sum import tile_2d

__all__ = ["SumSigUDF"]


class SumSigUDF(UDF):
    """Per-frame sum of all pixels: ``intensity``, a ``nav`` buffer.

    The result dtype is ``np.result_type(input dtype, float32)``. Integer frames are
    summed exactly in int64, float frames in float64, before the store.

    Examples
    --------
    >>> res = ctx.run_udf(dataset=ds, udf=SumSigUDF())
    >>> res["intensity"].data.shape == ds.shape.nav
    True
    """

    sig_cut_tiles = False  # whole frames: the kernels read every pixel of a frame at once

    params_spec = ()
    buffer_attrs = {"intensity": {"long_name": "frame sum", "units": "counts"}}

    def __init__(self) -> None:
        super().__init__()

    def get_preferred_input_dtype(self) -> Any:
        return self.USE_NATIVE_DTYPE

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        dtype = np.result_type(self.meta.input_dtype, np.float32)
        return {"intensity": self.buffer(kind="nav", dtype=dtype)}

    def get_backends(self) -> Any:
        """numpy, scipy.sparse and pydata sparse input (LiberTEM's built-ins take these too)."""
        return bk.BUILTIN_BACKENDS

    def process_tile(self, tile: np.ndarray) -> None:
        out = self.results.intensity
        if bk.is_sparse(tile):
            out += bk.to_numpy(bk.as_scipy_2d(tile).sum(axis=1)).reshape(-1).astype(out.dtype)
            return
        t2 = tile_2d(tile)
        kind = t2.dtype.kind
        if kind in "biu" and t2.dtype.itemsize < 8:
            from detflow.nodes import kernels

            acc = np.zeros(t2.shape[0], dtype=np.int64)
            kernels.sum_pixels_int(t2, acc)
            out += acc
        elif kind in "iuf":
            from detflow.nodes import kernels

            acc = np.zeros(t2.shape[0], dtype=np.float64)
            kernels.sum_pixels_float(t2, acc)
            out += acc
        else:
            out += t2.sum(axis=1, dtype=out.dtype)
