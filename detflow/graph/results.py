"""Results as users see them: array-like buffers, and their xarray form.

A :class:`ResultBuffer` is what ``run_udf`` returns per buffer name (LiberTEM's
``BufferWrapper`` has the same face): ``.data`` shaped like the dataset
(``nav_shape + extra_shape`` for nav results, filled outside the ROI, and where
partial results have no frames yet, with NaN for floats, 0 for integers, False for
booleans), ``.raw_data`` flat and ROI-filtered,
``.valid_mask``, ``.masked_data``, and ``np.asarray(buf)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from detflow.nodes.base import BufferDecl

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["ResultBuffer", "UDFResults", "dim_names", "fill_value", "to_xarray"]


def fill_value(dtype: np.dtype) -> Any:
    if dtype.kind in "fc":
        return np.nan
    if dtype.kind == "b":
        return False
    if dtype.kind in "US":
        return ""
    if dtype.kind == "O":
        return None
    return 0


def dim_names(prefix: str, ndim: int) -> tuple[str, ...]:
    """``nav_y, nav_x`` for 2-D; ``nav`` for 1-D; ``nav_z, nav_y, nav_x``; else numbered."""
    if ndim == 1:
        return (prefix,)
    if ndim <= 3:
        return tuple(f"{prefix}_{a}" for a in "zyx"[3 - ndim :])
    return tuple(f"{prefix}_{i}" for i in range(ndim))


class ResultBuffer:
    """One result buffer of one UDF."""

    def __init__(
        self,
        raw: np.ndarray,
        decl: BufferDecl,
        *,
        nav_shape: tuple[int, ...],
        sig_shape: tuple[int, ...],
        roi: np.ndarray | None,
        valid: np.ndarray | None = None,
    ) -> None:
        self._raw = raw
        self.decl = decl
        self.kind = decl.kind
        self.nav_shape = nav_shape
        self.sig_shape = sig_shape
        self._roi = roi  # flat bool or None
        self._valid = valid  # flat bool over the dataset: positions computed so far

    @property
    def dtype(self) -> np.dtype:
        return self._raw.dtype

    @property
    def extra_shape(self) -> tuple[int, ...]:
        if self.kind == "nav":
            return self._raw.shape[1:]
        if self.kind == "sig":
            return self._raw.shape[len(self.sig_shape) :]
        return self._raw.shape

    @property
    def raw_data(self) -> np.ndarray:
        """Nav results: flat over the ROI positions. Others: as ``data``."""
        return self._raw

    @property
    def data(self) -> np.ndarray:
        """Nav-shaped for nav results; positions outside the ROI, and (in partial
        results) positions whose frames have not arrived, hold the fill value: NaN for
        floats, 0 for integers, where only :attr:`valid_mask` tells them apart."""
        if self.kind != "nav":
            return self._raw
        shape = (*self.nav_shape, *self.extra_shape)
        missing = None if self._valid is None or self._valid.all() else ~self._valid
        if self._roi is None and missing is None:
            return self._raw.reshape(shape)
        fill = fill_value(self.dtype)
        if self._roi is None:
            out = self._raw.copy()
        else:
            out = np.full((self._roi.size, *self.extra_shape), fill, dtype=self.dtype)
            out[self._roi] = self._raw
        if missing is not None:
            out[missing] = fill
        return out.reshape(shape)

    @property
    def valid_mask(self) -> np.ndarray:
        """Boolean mask, nav-shaped for nav results, of the positions that hold results."""
        if self.kind != "nav":
            return np.ones(self._raw.shape, dtype=bool)
        mask = np.ones(int(np.prod(self.nav_shape)), dtype=bool)
        if self._roi is not None:
            mask &= self._roi
        if self._valid is not None:
            mask &= self._valid
        return mask.reshape(self.nav_shape)

    @property
    def masked_data(self) -> np.ma.MaskedArray:
        data = self.data
        if self.kind != "nav":
            return np.ma.masked_array(data)
        mask = ~self.valid_mask
        mask = np.broadcast_to(mask.reshape(mask.shape + (1,) * len(self.extra_shape)), data.shape)
        return np.ma.masked_array(data, mask=mask)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self.data
        return data if dtype is None else data.astype(dtype)

    def __repr__(self) -> str:
        return f"<ResultBuffer kind={self.kind} shape={self.shape} dtype={self.dtype}>"


def to_xarray(
    buffers: Mapping[str, ResultBuffer],
    *,
    extra_dims: Mapping[str, tuple[str, ...]] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """One ``xarray.Dataset`` with a variable per buffer and named dims."""
    import xarray as xr

    extra_dims = extra_dims or {}
    variables = {}
    for name, buf in buffers.items():
        extra = tuple(extra_dims.get(name, ())) or tuple(
            f"{name}_{i}" for i in range(len(buf.extra_shape))
        )
        if len(extra) != len(buf.extra_shape):
            extra = tuple(f"{name}_{i}" for i in range(len(buf.extra_shape)))
        if buf.kind == "nav":
            dims = dim_names("nav", len(buf.nav_shape)) + extra
        elif buf.kind == "sig":
            dims = dim_names("sig", len(buf.sig_shape)) + extra
        elif buf.data.ndim == 0:  # a scalar (a result node's cx, r)
            dims = ()
        else:
            dims = extra if buf.extra_shape else (f"{name}_0",)
        variables[name] = xr.Variable(dims, buf.data, attrs={"kind": buf.kind})
    return xr.Dataset(variables, attrs=dict(attrs or {}))


class UDFResults:
    """Partial or final results of a run (``run_udf_iter`` yields these).

    ``buffers`` is a tuple with one mapping per UDF, computed lazily: ``get_results``
    runs when a mapping is first read, not for every partition (so iterating is cheap
    when only some partial results are looked at). Read them before advancing the
    iterator: they reflect the state when first read.
    ``damage`` is a nav-shaped boolean :class:`ResultBuffer` of positions done so far.
    """

    def __init__(
        self,
        compute: list[Any],
        damage: ResultBuffer,
        *,
        frames_done: int,
        frames_total: int,
        partitions_done: int,
        partitions_total: int,
        node_ids: tuple[str, ...],
    ) -> None:
        self._compute = compute
        self._buffers: tuple[dict[str, ResultBuffer], ...] | None = None
        self.damage = damage
        self.frames_done = frames_done
        self.frames_total = frames_total
        self.partitions_done = partitions_done
        self.partitions_total = partitions_total
        self.node_ids = node_ids

    @property
    def buffers(self) -> tuple[dict[str, ResultBuffer], ...]:
        if self._buffers is None:
            self._buffers = tuple(f() for f in self._compute)
        return self._buffers

    @property
    def finished(self) -> bool:
        return self.partitions_done == self.partitions_total

    def __iter__(self) -> Iterator[dict[str, ResultBuffer]]:
        return iter(self.buffers)

    def __getitem__(self, i: int) -> dict[str, ResultBuffer]:
        return self.buffers[i]

    def __len__(self) -> int:
        return len(self._compute)

    def __repr__(self) -> str:
        return (
            f"<UDFResults {self.frames_done}/{self.frames_total} frames, "
            f"{self.partitions_done}/{self.partitions_total} partitions>"
        )
