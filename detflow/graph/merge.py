"""Merging on the driver: the running result of one UDF node, and result-node outputs
as result buffers.

A :class:`Merger` holds one UDF node's result buffers for the whole dataset and
merges each partition's partial result into them (``UDF.merge``), in completion
order, each partition exactly once; :meth:`Merger.results` runs ``get_results``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from detflow.errors import UDFError, annotate_node_error
from detflow.graph.results import ResultBuffer, ResultDict, check_returned, result_buffer
from detflow.nodes.base import UDF, BufferDecl, UDFData
from detflow.nodes.runner import PartialResult, check_result_only
from detflow.sources.base import DatasetMeta

__all__ = ["Merger", "result_buffers"]


class Merger:
    """The running result of one UDF node on the driver."""

    def __init__(self, node_id: str, udf: UDF, meta: DatasetMeta, roi: np.ndarray | None, *,
                 source: str | None = None) -> None:
        self.node_id = node_id
        self.source = source
        self.udf = udf
        self.meta = meta
        self.roi = roi
        self.decls = udf.get_result_buffers()
        n_rows = meta.n_frames if roi is None else int(np.count_nonzero(roi))
        self.dest = {
            k: d.allocate(meta, n_rows) for k, d in self.decls.items() if d.use != "result_only"
        }
        # row of each frame's result in the (ROI-filtered) nav buffers
        self.rows_before = None if roi is None else np.concatenate(([0], np.cumsum(roi)))

    def _with_valid(self, valid: np.ndarray) -> None:
        # LiberTEM's get_valid_nav_mask(): over the ROI positions, what is merged so far
        mask = valid if self.roi is None else valid[self.roi]
        self.udf.meta = self.udf.meta.replace(valid_nav_mask=mask.copy())

    def merge(self, partial: PartialResult, buffers: dict[str, np.ndarray], valid: np.ndarray) -> None:
        """Merge one partition's ``buffers``; ``valid`` marks the frames merged before it."""
        start = partial.frames.start
        lo = start if self.rows_before is None else int(self.rows_before[start])
        hi = lo + partial.n_processed
        owner = type(self.udf).__name__
        dest = UDFData(
            {k: (b[lo:hi] if self.decls[k].kind == "nav" else b) for k, b in self.dest.items()}, owner=owner
        )
        self._with_valid(valid)
        try:
            self.udf.merge(dest, UDFData(buffers, owner=owner))
        except Exception as err:
            raise annotate_node_error(
                err, node_id=self.node_id, node_type=type(self.udf).__name__,
                where=f"in merge of partition {partial.index}",
            ) from None

    def results(self, valid: np.ndarray) -> ResultDict:
        self.udf.results = UDFData(self.dest, owner=type(self.udf).__name__)
        self._with_valid(valid)
        try:
            computed = self.udf.get_results() or {}
            check_returned(self.udf, computed, self.decls)
        except Exception as err:
            raise annotate_node_error(
                err, node_id=self.node_id, node_type=type(self.udf).__name__,
                where="in get_results",
            ) from None
        check_result_only(self.udf, computed, self.node_id)
        attrs = {"node": self.node_id} if self.source is None else {"node": self.node_id, "source": self.source}
        out = ResultDict(udf=self.udf, attrs=attrs)
        names = [k for k, d in self.decls.items() if d.use != "private"]
        for name in names:
            decl = self.decls[name]
            value = computed[name] if name in computed else self.dest[name]
            out[name] = result_buffer(
                value, decl, nav_shape=self.meta.nav_shape, sig_shape=self.meta.sig_shape,
                roi=self.roi, valid=valid, flat_nav=lambda v, n=name: self._flat_nav(n, v),
            )
        return out

    def _flat_nav(self, name: str, value: np.ndarray) -> np.ndarray:
        nav = self.meta.nav_shape
        rows = self.meta.n_frames if self.roi is None else int(np.count_nonzero(self.roi))
        if value.ndim >= 1 and value.shape[0] == rows:
            return value
        if value.shape[: len(nav)] == nav:  # returned nav-shaped: flatten (a ROI keeps it whole)
            return value.reshape((self.meta.n_frames, *value.shape[len(nav):]))
        raise UDFError(
            f"node {self.node_id!r} ({type(self.udf).__name__}): get_results() returned nav "
            f"buffer {name!r} with shape {value.shape}; expected ({rows}, ...) "
            f"(flat over the ROI) or {nav} + extra"
        )


def result_buffers(values: Mapping[str, Any], meta: DatasetMeta, roi: np.ndarray | None) -> dict[str, ResultBuffer]:
    """A result node's outputs as result buffers: an array shaped like the scan (``nav_shape``
    first) is a ``nav`` result, anything else (a scalar, a frame) a ``single`` one."""
    out = {}
    nav = tuple(meta.nav_shape)
    for name, value in values.items():
        arr = np.asarray(value)
        if arr.ndim >= len(nav) and arr.shape[: len(nav)] == nav and arr.ndim > 0:
            extra = arr.shape[len(nav):]
            flat = arr.reshape((meta.n_frames, *extra))
            decl = BufferDecl(kind="nav", extra_shape=extra, dtype=arr.dtype)
            out[name] = ResultBuffer(flat if roi is None else flat[roi], decl, nav_shape=nav,
                                     sig_shape=meta.sig_shape, roi=roi)
        else:
            decl = BufferDecl(kind="single", extra_shape=arr.shape, dtype=arr.dtype)
            out[name] = ResultBuffer(arr, decl, nav_shape=nav, sig_shape=meta.sig_shape, roi=None)
    return out
