"""Level frame nodes: ``threshold`` (values below a level set to 0, or 0/1 counting) and ``cast``.

Both keep the frame geometry and take scipy.sparse CSR blocks as well as dense ones.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from detflow.errors import ParameterError
from detflow.nodes.frames.base import FrameNode, is_sparse
from detflow.nodes.params import Param, one_of

__all__ = ["CastFrames", "ThresholdFrames"]


def _finite(value: Any) -> str | None:
    return None if math.isfinite(value) else f"must be a finite number; got {value!r}"


class ThresholdFrames(FrameNode):
    """Values below ``level`` set to 0 (``mode="zero"``), or every pixel counted as 1 where it
    is at least ``level`` and 0 elsewhere (``mode="count"``, e.g. electron counting).

    The dtype is kept in both modes. NaN is below every level: it becomes 0 in counting
    mode and stays NaN in ``zero`` mode (it is not below the level either).

    Examples
    --------
    >>> import numpy as np
    >>> block = np.array([[[0, 3, 7, 12]]], dtype=np.uint16)
    >>> ThresholdFrames(level=5).apply(block)
    array([[[ 0,  0,  7, 12]]], dtype=uint16)
    >>> ThresholdFrames(level=5, mode="count").apply(block)
    array([[[0, 0, 1, 1]]], dtype=uint16)
    """

    type_name = "threshold"
    sparse_input = True
    params_spec = (
        Param("level", float, doc="values below it become 0", check=_finite),
        Param("mode", str, default="zero", doc="'zero' (keep values >= level) or 'count' (1 where >= level)",
              check=one_of("zero", "count")),
    )

    def output_signature(self, sig_shape: tuple[int, ...], dtype: np.dtype) -> tuple[tuple[int, ...], np.dtype]:
        return tuple(int(s) for s in sig_shape), np.dtype(dtype)

    def apply(self, block: Any, *, sig_shape: tuple[int, ...] | None = None) -> Any:
        level = self.params.level
        if is_sparse(block):
            return self._apply_sparse(block)
        if self.params.mode == "count":
            return (block >= level).astype(block.dtype)
        return np.where(block < level, block.dtype.type(0), block)

    def _apply_sparse(self, block: Any) -> Any:
        level = self.params.level
        out = block.tocsr(copy=True)
        if self.params.mode == "count":
            if level <= 0:
                raise ParameterError("level", f"must be > 0 to count on sparse frames (their implicit zeros "
                                     f"would all count); got {level}")
            out.data = (out.data >= level).astype(out.dtype)
        else:
            out.data = np.where(out.data < level, out.dtype.type(0), out.data)
        out.eliminate_zeros()
        return out


class CastFrames(FrameNode):
    """Frames converted to ``dtype`` (numpy's ``astype``: floats to integers truncate, and
    values outside the target's range wrap around, so threshold or scale first).

    Examples
    --------
    >>> import numpy as np
    >>> CastFrames(dtype="float32").apply(np.array([[[1, 2]]], dtype=np.uint16))
    array([[[1., 2.]]], dtype=float32)
    """

    type_name = "cast"
    sparse_input = True
    params_spec = (Param("dtype", "dtype", doc="the dtype frames are converted to"),)

    def output_signature(self, sig_shape: tuple[int, ...], dtype: np.dtype) -> tuple[tuple[int, ...], np.dtype]:
        return tuple(int(s) for s in sig_shape), self.params.dtype

    def apply(self, block: Any, *, sig_shape: tuple[int, ...] | None = None) -> Any:
        if is_sparse(block):
            return block.tocsr().astype(self.params.dtype)
        return block.astype(self.params.dtype)
