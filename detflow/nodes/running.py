"""One UDF during one partition task: its instance, buffers, backend and per-unit state.

:class:`RunningUDF` is what :mod:`detflow.nodes.runner` drives. It keeps what LiberTEM's
runner sets on a UDF between calls in one place:

* buffers allocated once per partition (``result_only`` ones read as ``None``);
* ``self.results`` switched to the views of the current unit (frame, tile, partition);
* ``self.meta`` for the unit: ``slice`` (ROI-reduced rows, as LiberTEM's), ``sig_slice``,
  ``coordinates``, ``tiling_scheme_idx``, ``array_backend``;
* ``self.params`` with auxiliary data (:meth:`UDF.aux_data`) cut to the unit's frames;
* the input converted to the UDF's dtype and array backend, through a cache shared by
  all UDFs of the task so each (dtype, backend) conversion happens once per tile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from detflow.nodes import backends as bk
from detflow.nodes.base import UDF, AuxBufferWrapper, BufferDecl, UDFParams
from detflow.nodes.buffers import UDFData
from detflow.nodes.meta import Slice, TilingScheme, UDFMeta
from detflow.sources.base import DatasetMeta
from detflow.sources.shape import Shape

__all__ = ["RunningUDF", "visible_decls", "whole_sig_scheme"]


def visible_decls(udf: UDF) -> dict[str, BufferDecl]:
    """Buffers allocated on workers (everything but ``result_only``)."""
    return {k: d for k, d in udf.get_result_buffers().items() if d.use != "result_only"}


def whole_sig_scheme(sig_shape: tuple[int, ...], depth: int) -> TilingScheme:
    """The tiling scheme of whole-frame tiles ``depth`` frames deep."""
    sig = Shape(sig_shape, len(sig_shape))
    return TilingScheme((Slice((0,) * len(sig_shape), sig),), depth)


class RunningUDF:
    """One UDF in one task (see the module docstring)."""

    bands: list[tuple[int, int]]

    def __init__(
        self,
        udf: UDF,
        meta: UDFMeta,
        n_rows: int,
        dmeta: DatasetMeta,
        *,
        input_dtype: np.dtype,
        backend: str,
        partition_coords: np.ndarray | None = None,
        row0: int = 0,
    ) -> None:
        self.udf = udf
        self.sig = tuple(dmeta.sig_shape)  # of this UDF's input (sparse blocks carry it flat)
        self.row0 = row0  # the partition's first row among the run's (ROI) frames
        self.backend = backend
        udf._backend = backend
        udf.meta = meta.replace(input_dtype=input_dtype, array_backend=backend, coordinates=partition_coords)
        self.method = udf.get_method()
        all_decls = udf.get_result_buffers()
        self.decls = {k: d for k, d in all_decls.items() if d.use != "result_only"}
        self.result_only = [k for k, d in all_decls.items() if d.use == "result_only"]
        self.buffers = {k: d.allocate(dmeta, n_rows) for k, d in self.decls.items()}
        self.owner = type(udf).__name__
        self.bands = []
        self.aux = {k: v for k, v in udf._kwargs.items() if isinstance(v, AuxBufferWrapper)}
        self._base_params = udf.params
        self.set_results(self.buffers)
        udf.task_data = UDFData(udf.get_task_data(), owner=self.owner, write_through=False)

    # --- views -----------------------------------------------------------------------
    def set_results(self, views: dict[str, Any]) -> None:
        data = dict(views)
        for k in self.result_only:
            data[k] = None
        self.udf.results = UDFData(data, owner=self.owner)

    def rows(self, lo: int, hi: int, band: tuple[int, int] | None = None) -> dict[str, Any]:
        out = {}
        for k, b in self.buffers.items():
            kind = self.decls[k].kind
            out[k] = b[lo:hi] if kind == "nav" else (b[band[0] : band[1]] if band and kind == "sig" else b)
        return out

    def plan_bands(self, depth: int, sig_shape: tuple[int, ...]) -> TilingScheme:
        """Cut the signal into row bands if this tile UDF asks for tiles smaller than frames.

        A UDF asks through ``get_tiling_preferences()["total_size"]``: a byte count below
        ``depth`` whole frames in its input dtype. Only this UDF sees the cut tiles; the
        others of the run keep whole frames.
        """
        self.bands: list[tuple[int, int]] = []
        total = self.udf.get_tiling_preferences().get("total_size")
        row_bytes = int(np.prod(sig_shape[1:], dtype=np.int64)) * np.dtype(self.udf.meta.input_dtype).itemsize
        want = isinstance(total, int | float | np.integer | np.floating) and np.isfinite(total)
        if self.method != "tile" or self.backend != bk.NUMPY or len(sig_shape) < 2 or not want:
            return whole_sig_scheme(sig_shape, depth)
        rows = max(1, int(total or 0) // max(1, depth * row_bytes))
        if rows >= sig_shape[0]:
            return whole_sig_scheme(sig_shape, depth)
        self.bands = [(y, min(y + rows, sig_shape[0])) for y in range(0, sig_shape[0], rows)]
        n = len(sig_shape)
        return TilingScheme(tuple(
            Slice((y0,) + (0,) * (n - 1), Shape((y1 - y0, *sig_shape[1:]), n)) for y0, y1 in self.bands
        ), depth)

    def enter_band(self, i: int) -> None:
        """Point ``self.results``' sig buffers and ``meta.sig_slice`` at signal band ``i``."""
        meta = self.udf.meta
        assert meta.tiling_scheme is not None and meta.slice is not None
        row = meta.slice.origin[0] - self.row0
        self.udf.meta = meta.replace(sig_slice=meta.tiling_scheme[i], tiling_scheme_idx=i)
        self.set_results(self.rows(row, row + meta.slice.shape[0], self.bands[i]))

    def frame(self, i: int) -> dict[str, Any]:
        out = {}
        for k, b in self.buffers.items():
            d = self.decls[k]
            out[k] = (b[i : i + 1] if not d.extra_shape else b[i]) if d.kind == "nav" else b
        return out

    # --- per unit ----------------------------------------------------------------------
    def enter(self, row: int, count: int, flat_idx: np.ndarray | None, coords: np.ndarray | None,
              *, frame: bool = False) -> None:
        """Point ``self.meta``, ``self.results`` and ``self.params`` at one unit of work:
        ``count`` frames from partition row ``row``, at dataset positions ``flat_idx``."""
        sig = self.udf.meta.dataset_shape.sig
        self.udf.meta = self.udf.meta.replace(
            slice=Slice((self.row0 + row,) + (0,) * len(sig), Shape((count, *sig), len(sig))),
            coordinates=coords,
        )
        self.set_results(self.frame(row) if frame else self.rows(row, row + count))
        if self.aux and flat_idx is not None:
            params = dict(self._base_params._kwargs)
            for name, aux in self.aux.items():
                params[name] = aux.for_frames(flat_idx[0] if frame else flat_idx, frame=frame)
            self.udf.params = UDFParams(params)

    def leave(self, n: int, partition_coords: np.ndarray | None) -> None:
        """Back to the whole partition (for ``postprocess``)."""
        self.enter(0, n, None, partition_coords)
        self.set_results(self.buffers)
        self.udf.params = self._base_params

    def convert(self, data: Any, cache: dict[tuple[Any, str], Any]) -> Any:
        """``data`` in this UDF's dtype and backend, converted once per block-wide ``cache``.

        ``cache`` holds the block's versions keyed by ``(dtype, backend)``; a sparse block
        is densified at most once (:func:`densified`), whatever number of UDFs want it dense.
        """
        want = self.udf.meta.input_dtype
        key = (want, self.backend)
        out = cache.get(key)
        if out is not None:
            return out
        if bk.is_sparse(data) and self.backend in bk.SPARSE_BACKENDS:
            typed = data if data.dtype == want else data.astype(want)
            out = bk.sparse_to_backend(typed, self.backend, self.sig)
        else:
            dense_key = (want, bk.NUMPY)
            dense = cache.get(dense_key)
            if dense is None:
                native = densified(data, cache, self.sig)
                dense = native if native.dtype == want else native.astype(want)
                cache[dense_key] = dense
            out = dense if self.backend == bk.NUMPY else bk.to_backend(dense, self.backend)
        cache[key] = out
        return out


def densified(block: Any, cache: dict[tuple[Any, str], Any], sig: tuple[int, ...]) -> np.ndarray:
    """``block`` as a dense ``(n, *sig)`` array in its own dtype, made once per ``cache``."""
    if not bk.is_sparse(block):
        return block
    key = (block.dtype, bk.NUMPY)
    dense = cache.get(key)
    if dense is None:
        dense = bk.to_numpy(block).reshape((block.shape[0], *sig))
        cache[key] = dense
    return dense


def coords_of(nav_shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """Flat dataset positions → nav coordinates, one row per position."""
    def coords(idx: np.ndarray) -> np.ndarray:
        return np.stack(np.unravel_index(idx, nav_shape), axis=-1).reshape(-1, len(nav_shape))

    return coords
