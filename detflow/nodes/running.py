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
from detflow.nodes.tiling import negotiate_tileshape, sig_subslices
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

    #: the signal tiles this UDF's tiles are cut into (empty: whole frames)
    cuts: list[tuple[slice, ...]]
    #: frames per tile this UDF asked for (None: the tiles as the runner reads them)
    depth: int | None

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
        self.cuts = []
        self.depth = None
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

    def rows(self, lo: int, hi: int, cut: tuple[slice, ...] | None = None) -> dict[str, Any]:
        out = {}
        for k, b in self.buffers.items():
            kind = self.decls[k].kind
            out[k] = b[lo:hi] if kind == "nav" else (b[cut] if cut and kind == "sig" else b)
        return out

    def plan_tiles(self, depth: int, sig_shape: tuple[int, ...], n_frames: int,
                   dataset_tileshape: tuple[int, ...] | None = None) -> TilingScheme:
        """The tiling scheme of this UDF: ``depth`` frames of whole frames, unless it is a
        tile UDF with tiling preferences (:func:`~detflow.nodes.tiling.negotiate_tileshape`)
        or the dataset has a tile shape of its own; then tiles may be shallower than the
        runner reads them (:attr:`depth`) and cut in the signal (:attr:`cuts`)."""
        self.cuts, self.depth = [], None
        if self.method != "tile":
            return whole_sig_scheme(sig_shape, depth)
        if dataset_tileshape is not None and len(dataset_tileshape) == len(sig_shape) + 1:
            cut = self.udf.sig_cut_tiles  # a built-in takes the depth, not the cut
            shape: tuple[int, tuple[int, ...]] | None = (
                int(dataset_tileshape[0]), tuple(int(t) for t in dataset_tileshape[1:]) if cut else tuple(sig_shape))
        else:
            shape = negotiate_tileshape(self.udf, sig_shape, self.udf.meta.input_dtype,
                                        self.udf.meta.dataset_dtype, n_frames)
        if shape is None:
            return whole_sig_scheme(sig_shape, depth)
        tile_depth, sig_tile = shape
        self.depth = max(1, min(tile_depth, depth))
        sig_tile = tuple(min(t, s) for t, s in zip(sig_tile, sig_shape, strict=True))
        if sig_tile == tuple(sig_shape) or self.backend != bk.NUMPY:  # scipy.sparse tiles are 2-D: whole frames
            return whole_sig_scheme(sig_shape, self.depth)
        self.cuts = sig_subslices(sig_shape, sig_tile)
        n = len(sig_shape)
        return TilingScheme(tuple(
            Slice(tuple(c.start for c in cut), Shape(tuple(c.stop - c.start for c in cut), n)) for cut in self.cuts
        ), self.depth)

    def enter_cut(self, i: int) -> None:
        """Point ``self.results``' sig buffers and ``meta.sig_slice`` at signal tile ``i``."""
        meta = self.udf.meta
        assert meta.tiling_scheme is not None and meta.slice is not None
        row = meta.slice.origin[0] - self.row0
        self.udf.meta = meta.replace(sig_slice=meta.tiling_scheme[i], tiling_scheme_idx=i)
        self.set_results(self.rows(row, row + meta.slice.shape[0], self.cuts[i]))

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
