"""Monitors for live runs: the latest frame and the sum of the latest partition.

Neither accumulates over the whole run: each merge *replaces* the running result,
so a dashboard or live plot shows what the detector sees now (LiberTEM-live's
``SignalMonitorUDF`` and ``PartitionMonitorUDF``). Partitions may merge in any
order; each monitor keeps the partition that comes latest *in the scan* (a private
``seen`` buffer holds its last frame number, plus one), so a slow worker finishing
an earlier partition late does not roll the picture back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detflow.nodes.base import UDF, BufferDecl, UDFData
from detflow.nodes.params import Param

__all__ = ["PartitionMonitorUDF", "SignalMonitorUDF"]


class _LatestMixin(UDF):
    """Replace-on-merge bookkeeping shared by the monitors."""

    def _decls(self, dtype: Any) -> dict[str, BufferDecl]:
        return {
            "intensity": self.buffer(kind="sig", dtype=dtype),
            "seen": self.buffer(kind="single", dtype=np.int64, use="private"),
        }

    def _mark(self) -> None:
        where = self.meta.slice
        if where is not None:
            self.results.seen[...] = where.origin[0] + where.shape[0]  # last row + 1

    def merge(self, dest: UDFData, src: UDFData) -> None:
        if src.seen >= dest.seen:
            dest.intensity[:] = src.intensity
            dest.seen[...] = src.seen


class SignalMonitorUDF(_LatestMixin):
    """The last frame (in the ROI) of the latest partition: ``intensity``, a ``sig`` buffer.

    Examples
    --------
    >>> res = ctx.run_udf(dataset=ds, udf=SignalMonitorUDF())
    >>> res["intensity"].data.shape == ds.shape.sig
    True
    """

    def get_preferred_input_dtype(self) -> Any:
        return self.USE_NATIVE_DTYPE

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        return self._decls(self.meta.input_dtype)

    def process_partition(self, partition: np.ndarray) -> None:
        if len(partition):
            self.results.intensity[:] = partition[-1]
            self._mark()


class PartitionMonitorUDF(_LatestMixin):
    """Sum of the frames (in the ROI) of the latest partition: ``intensity``, a ``sig`` buffer.

    Parameters
    ----------
    dtype
        Minimum dtype of the sum (``float32``).
    """

    params_spec = (Param("dtype", "dtype", default="float32", doc="minimum dtype of the sum"),)

    def __init__(self, dtype: Any = "float32") -> None:
        super().__init__(dtype=dtype)

    def get_preferred_input_dtype(self) -> Any:
        return self.USE_NATIVE_DTYPE

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        return self._decls(np.result_type(self.meta.input_dtype, np.dtype(self.params.dtype)))

    def process_partition(self, partition: np.ndarray) -> None:
        out = self.results.intensity
        out[:] = partition.sum(axis=0, dtype=out.dtype)
        self._mark()
