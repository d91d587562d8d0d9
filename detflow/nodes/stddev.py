"""Per-pixel mean, variance and standard deviation over frames (LiberTEM's ``StdDevUDF``).

State and policy: within a partition, each pixel keeps float64 sums of the
deviations from a *shift* (its value in the first frame the partition saw) and of
their squares; one pass over each tile, in a numba kernel. ``postprocess`` turns them
into the LiberTEM buffers ``sum`` and ``varsum`` (the sum of squared deviations from
the partition mean), and ``merge`` combines partitions pairwise with Chan et al.'s
update ``varsum = varsum_a + varsum_b + |mean_b - mean_a|**2 * n_a * n_b / n``, which
is exact in any merge order (partitions arrive in completion order).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detflow.nodes import backends as bk
from detflow.nodes.base import UDF, BufferDecl, UDFData
from detflow.nodes.params import Param
from detflow.nodes.sum import flat_view, tile_2d

__all__ = ["StdDevUDF", "consolidate_result", "run_stddev"]


class StdDevUDF(UDF):
    """Sum, sum of squared deviations, variance, standard deviation and mean per pixel.

    Buffers: ``varsum`` (sig), ``num_frames`` (single, int64), ``sum`` (sig); results
    only: ``var``, ``std``, ``mean`` (sig), population statistics as ``np.var`` and
    ``np.std`` with ``ddof=0``, over the frames in the ROI.

    Parameters
    ----------
    dtype
        Base dtype of ``varsum``, ``var`` and ``std`` (default float64); ``sum`` and
        ``mean`` are ``np.result_type(input dtype, dtype)``.
    use_numba
        Accepted for LiberTEM compatibility; the numba kernel is used whenever the
        input is real.

    Examples
    --------
    >>> res = ctx.run_udf(dataset=ds, udf=StdDevUDF())
    >>> np.allclose(res["std"].data, data.std(axis=(0, 1)))
    True
    """

    sig_cut_tiles = False  # whole frames: the kernels read every pixel of a frame at once

    params_spec = (
        Param("dtype", "dtype", default=None, doc="base dtype (default float64)"),
        Param("use_numba", bool, default=True, doc="accepted for LiberTEM compatibility"),
    )
    buffer_attrs = {
        "sum": {"long_name": "sum of frames", "units": "counts"},
        "mean": {"long_name": "mean frame", "units": "counts"},
        "std": {"long_name": "standard deviation", "units": "counts"},
        "var": {"long_name": "variance", "units": "counts^2"},
    }
    internal_buffers = frozenset({"varsum", "num_frames"})

    def __init__(self, dtype: Any = None, use_numba: bool = True) -> None:
        super().__init__(dtype=dtype, use_numba=use_numba)

    def _dtypes(self) -> tuple[np.dtype, np.dtype]:
        base = np.dtype(np.float64 if self.params.dtype is None else self.params.dtype)
        return base, np.result_type(self.meta.input_dtype, base)

    def get_preferred_input_dtype(self) -> Any:
        return self.USE_NATIVE_DTYPE

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        base, dtype = self._dtypes()
        return {
            "varsum": self.buffer(kind="sig", dtype=base),
            "num_frames": self.buffer(kind="single", dtype="int64"),
            "sum": self.buffer(kind="sig", dtype=dtype),
            "var": self.buffer(kind="sig", dtype=base, use="result_only"),
            "std": self.buffer(kind="sig", dtype=base, use="result_only"),
            "mean": self.buffer(kind="sig", dtype=dtype, use="result_only"),
        }

    def get_task_data(self) -> dict[str, Any]:
        size = int(np.prod(self.meta.sig_shape))
        acc = np.complex128 if self.meta.input_dtype.kind == "c" else np.float64
        return {
            "shift": np.zeros(size, dtype=acc),
            "s1": np.zeros(size, dtype=acc),
            "s2": np.zeros(size, dtype=np.float64),
        }

    def get_backends(self) -> Any:
        """numpy, scipy.sparse and pydata sparse input (sparse: moments of the stored pixels)."""
        return bk.BUILTIN_BACKENDS

    def process_tile(self, tile: np.ndarray) -> None:
        if bk.is_sparse(tile):
            self._sparse_moments(tile)
            return
        td = self.task_data
        t2 = tile_2d(tile)
        if t2.shape[0] == 0:
            return
        if self.results.num_frames[0] == 0:
            td.shift[:] = t2[0]
        if t2.dtype.kind in "biuf":
            from detflow.nodes import kernels

            kernels.shifted_moments(t2, td.shift, td.s1, td.s2)
        else:  # complex: numpy, with |d|**2 so that varsum stays real
            d = t2 - td.shift
            td.s1 += d.sum(axis=0)
            td.s2 += (d.real**2 + d.imag**2).sum(axis=0)
        self.results.num_frames[0] += t2.shape[0]

    def _sparse_moments(self, tile: Any) -> None:
        """Plain (unshifted) sums of a sparse tile: only stored pixels are read. A UDF gets
        one backend for the whole run, so the shift stays 0 for all its sparse tiles."""
        td = self.task_data
        csr = bk.as_scipy_2d(tile)
        if csr.shape[0] == 0:
            return
        values = csr.astype(np.result_type(csr.dtype, np.float64))
        td.s1 += np.asarray(values.sum(axis=0)).reshape(-1).astype(td.s1.dtype)
        squares = values.multiply(values.conj()).real if values.dtype.kind == "c" else values.multiply(values)
        td.s2 += np.asarray(squares.sum(axis=0)).reshape(-1)
        self.results.num_frames[0] += csr.shape[0]

    def postprocess(self) -> None:
        n = int(self.results.num_frames[0])
        if n == 0:
            return
        td = self.task_data
        flat_view(self.results.sum)[:] = td.s1 + n * td.shift
        varsum = td.s2 - (td.s1.real**2 + td.s1.imag**2) / n
        # rounding can leave -tiny where all frames are equal; variance is >= 0
        flat_view(self.results.varsum)[:] = np.maximum(varsum, 0.0)

    def merge(self, dest: UDFData, src: UDFData) -> None:
        n_a = int(dest.num_frames[0])
        n_b = int(src.num_frames[0])
        if n_b == 0:
            return
        if n_a == 0:
            dest.sum[:] = src.sum
            dest.varsum[:] = src.varsum
        else:
            n = n_a + n_b
            delta = src.sum / n_b - dest.sum / n_a
            dest.varsum[:] += src.varsum + np.abs(delta) ** 2 * (n_a * n_b / n)
            dest.sum[:] += src.sum
        dest.num_frames[:] = n_a + n_b

    def get_results(self) -> dict[str, Any]:
        n = int(self.results.num_frames[0])
        base, dtype = self._dtypes()
        if n == 0:  # empty ROI: no statistics, and no division-by-zero warning
            nan = np.full(self.meta.sig_shape, np.nan)
            return {"var": nan.astype(base), "std": nan.astype(base), "mean": nan.astype(dtype)}
        var = (self.results.varsum / n).astype(base, copy=False)
        return {
            "var": var,
            "std": np.sqrt(var),
            "mean": (self.results.sum / n).astype(dtype, copy=False),
        }


def consolidate_result(udf_result: Any) -> dict[str, Any]:
    """LiberTEM's ``consolidate_result``: the ``StdDevUDF`` results as plain arrays
    (``num_frames`` as a number)."""
    return {
        "num_frames": udf_result["num_frames"].data[0],
        **{k: udf_result[k].data for k in ("varsum", "sum", "var", "std", "mean")},
    }


def run_stddev(
    ctx: Any, dataset: Any, roi: Any = None, progress: bool = False, use_numba: bool = True
) -> dict[str, Any]:
    """LiberTEM's ``run_stddev``: run :class:`StdDevUDF` and :func:`consolidate_result` it."""
    return consolidate_result(ctx.run_udf(dataset=dataset, udf=StdDevUDF(use_numba=use_numba), roi=roi,
                                          progress=progress))
