"""Sum of all frames (LiberTEM's ``SumUDF``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from detflow.errors import UDFError
from detflow.nodes import backends as bk
from detflow.nodes.base import UDF, BufferDecl, UDFData
from detflow.nodes.params import Param

__all__ = ["SumUDF", "flat_view", "tile_2d"]

#: dtype kinds the numba kernels handle; others (complex, object) take a numpy path
NUMBA_KINDS = frozenset("biuf")


def flat_view(arr: np.ndarray) -> np.ndarray:
    """``arr`` as a 1-D *view*: a kernel writing into it writes into ``arr``."""
    if not arr.flags.c_contiguous:
        raise UDFError(f"expected a contiguous result buffer; got strides {arr.strides}")
    return arr.reshape(-1)


def tile_2d(tile: np.ndarray) -> np.ndarray:
    """``tile`` as ``(n_frames, n_pixels)``, a view where the layout allows."""
    return tile.reshape(tile.shape[0], -1)


class SumUDF(UDF):
    """Sum over all frames in the ROI: ``intensity``, a ``sig`` buffer.

    The sum accumulates in ``np.result_type(input dtype, dtype)``; frames arrive in
    their native dtype, so no converted copy of the data is made.

    Parameters
    ----------
    dtype
        Minimum dtype of the sum (``float32`` as in LiberTEM).

    Examples
    --------
    >>> res = ctx.run_udf(dataset=ds, udf=SumUDF())
    >>> res["intensity"].data.shape == ds.shape.sig
    True
    """

    sig_cut_tiles = False  # whole frames: the kernels read every pixel of a frame at once

    params_spec = (Param("dtype", "dtype", default="float32", doc="minimum dtype of the sum"),)
    buffer_attrs = {"intensity": {"long_name": "sum of frames", "units": "counts"}}

    def __init__(self, dtype: Any = "float32") -> None:
        super().__init__(dtype=dtype)

    def get_preferred_input_dtype(self) -> Any:
        return self.USE_NATIVE_DTYPE

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        dtype = np.result_type(self.meta.input_dtype, np.dtype(self.params.dtype))
        return {"intensity": self.buffer(kind="sig", dtype=dtype)}

    def get_backends(self) -> Any:
        """numpy, scipy.sparse and pydata sparse input (LiberTEM's built-ins take these too)."""
        return bk.BUILTIN_BACKENDS

    def process_tile(self, tile: np.ndarray) -> None:
        out = flat_view(self.results.intensity)
        if bk.is_sparse(tile):  # only the stored pixels are read
            t = bk.as_scipy_2d(tile)
            if getattr(t, "format", None) == "csr":  # one pass over the stored values, no matrix product
                lo, hi = int(t.indptr[0]), int(t.indptr[-1])
                out += np.bincount(t.indices[lo:hi], weights=t.data[lo:hi], minlength=out.size).astype(out.dtype)
            else:
                out += bk.to_numpy(t.sum(axis=0)).reshape(-1).astype(out.dtype)
            return
        t2 = tile_2d(tile)
        if t2.dtype.kind in NUMBA_KINDS and out.dtype.kind in "fc":
            from detflow.nodes import kernels

            kernels.sum_frames(t2, out)
        else:
            out += t2.sum(axis=0, dtype=out.dtype)

    def merge(self, dest: UDFData, src: UDFData) -> None:
        dest.intensity[:] += src.intensity
