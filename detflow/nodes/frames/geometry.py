"""Geometry frame nodes: crop, bin, flip, rotate90, transpose (2-D frames, axes ``(y, x)``).

Crop, flip, rotate90 and transpose return views of the block (no copy, no write); bin
sums (or averages) ``fy x fx`` boxes into a new array. All of them also take
scipy.sparse CSR blocks ``(n, h * w)`` (``apply(block, sig_shape=(h, w))``): a view
becomes a selection of columns (the column map is the same transformation applied to
the grid of pixel indices), a bin a product with a sparse ``(h * w, ho * wo)`` matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detflow.errors import ParameterError
from detflow.nodes.frames.base import FrameNode, is_sparse
from detflow.nodes.params import Param, non_negative, one_of, positive

__all__ = ["BinFrames", "CropFrames", "FlipFrames", "Rotate90Frames", "TransposeFrames"]


class _ViewFrames(FrameNode):
    """A node whose output is a view of its input: a fixed rearrangement of pixels."""

    sparse_input = True

    def _view(self, block: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check(self, h: int, w: int) -> None:
        """Raise ParameterError where the parameters do not fit ``h x w`` frames."""

    def output_signature(self, sig_shape: tuple[int, ...], dtype: np.dtype) -> tuple[tuple[int, ...], np.dtype]:
        h, w = self._need_2d(sig_shape)
        self._check(h, w)
        out = self._view(np.empty((0, h, w), dtype=np.uint8))
        return tuple(int(s) for s in out.shape[1:]), np.dtype(dtype)

    def apply(self, block: Any, *, sig_shape: tuple[int, ...] | None = None) -> Any:
        if is_sparse(block):
            h, w = self._sparse_frame(block, sig_shape)
            grid = np.arange(h * w, dtype=np.int64).reshape(1, h, w)
            columns = np.ascontiguousarray(self._view(grid)[0]).reshape(-1)
            return block.tocsr()[:, columns]
        return self._view(block)

    def _sparse_frame(self, block: Any, sig_shape: tuple[int, ...] | None) -> tuple[int, int]:
        if sig_shape is None:
            raise ParameterError("sig_shape", f"frame node {self.type_name!r}: a sparse block needs apply(block, "
                                 "sig_shape=(h, w)), the shape of its frames")
        h, w = self._need_2d(tuple(sig_shape))
        if block.shape[1] != h * w:
            raise ParameterError("sig_shape", f"is {(h, w)}, {h * w} pixels; the sparse block has "
                                 f"{block.shape[1]} columns")
        self._check(h, w)
        return h, w


def _end(value: Any) -> str | None:
    return None if value is None else positive(value)


class CropFrames(_ViewFrames):
    """The box ``[y0:y1, x0:x1]`` of every frame (ends exclusive; ``None``: the frame's edge).

    Examples
    --------
    >>> import numpy as np
    >>> node = CropFrames(y0=1, x0=1, x1=3)
    >>> node.output_signature((3, 4), np.dtype("uint8"))
    ((2, 2), dtype('uint8'))
    >>> node.apply(np.arange(12, dtype=np.uint8).reshape(1, 3, 4))
    array([[[ 5,  6],
            [ 9, 10]]], dtype=uint8)
    >>> node.output_signature((1, 4), np.dtype("uint8"))
    Traceback (most recent call last):
    ...
    detflow.errors.ParameterError: parameter 'y0' must be < the box's end y1 = 1 (the frame height); got 1
    """

    type_name = "crop"
    params_spec = (
        Param("y0", int, default=0, doc="first row", check=non_negative),
        Param("y1", int, default=None, doc="row after the last (default: the frame height)", check=_end),
        Param("x0", int, default=0, doc="first column", check=non_negative),
        Param("x1", int, default=None, doc="column after the last (default: the frame width)", check=_end),
    )

    def _box(self, h: int, w: int) -> tuple[int, int, int, int]:
        p = self.params
        return p.y0, h if p.y1 is None else p.y1, p.x0, w if p.x1 is None else p.x1

    def _check(self, h: int, w: int) -> None:
        y0, y1, x0, x1 = self._box(h, w)
        for name, end, size, what in (("y1", y1, h, "height"), ("x1", x1, w, "width")):
            if end > size:
                raise ParameterError(name, f"must be <= the frame {what} {size}; got {end} (frames are {h} x {w})")
        for name, start, end, stop, what in (("y0", y0, y1, "y1", "height"), ("x0", x0, x1, "x1", "width")):
            if start >= end:
                given = self.params[stop] is not None
                said = f"{stop} = {end}" + ("" if given else f" (the frame {what})")
                raise ParameterError(name, f"must be < the box's end {said}; got {start}")

    def _view(self, block: np.ndarray) -> np.ndarray:
        y0, y1, x0, x1 = self._box(block.shape[1], block.shape[2])
        return block[:, y0:y1, x0:x1]


class FlipFrames(_ViewFrames):
    """Every frame mirrored along ``axis``: ``"y"`` (upside down) or ``"x"`` (left-right).

    Examples
    --------
    >>> import numpy as np
    >>> FlipFrames(axis="x").apply(np.array([[[1, 2, 3]]]))
    array([[[3, 2, 1]]])
    """

    type_name = "flip"
    params_spec = (Param("axis", str, doc="'y' (rows reversed) or 'x' (columns reversed)", check=one_of("y", "x")),)

    def _view(self, block: np.ndarray) -> np.ndarray:
        return block[:, ::-1, :] if self.params.axis == "y" else block[:, :, ::-1]


class Rotate90Frames(_ViewFrames):
    """Every frame rotated by ``k`` quarter turns, as ``numpy.rot90(frame, k)`` does
    (counter-clockwise as displayed with row 0 at the top).

    Examples
    --------
    >>> import numpy as np
    >>> Rotate90Frames(k=1).apply(np.array([[[1, 2], [3, 4]]]))
    array([[[2, 4],
            [1, 3]]])
    """

    type_name = "rotate90"
    params_spec = (Param("k", int, default=1, doc="number of quarter turns (negative: clockwise)"),)

    def _view(self, block: np.ndarray) -> np.ndarray:
        return np.rot90(block, self.params.k, axes=(1, 2))


class TransposeFrames(_ViewFrames):
    """Every frame transposed: ``out[y, x] = in[x, y]``.

    Examples
    --------
    >>> import numpy as np
    >>> TransposeFrames().output_signature((2, 5), np.dtype("float32"))
    ((5, 2), dtype('float32'))
    """

    type_name = "transpose"
    params_spec = ()

    def _view(self, block: np.ndarray) -> np.ndarray:
        return block.transpose(0, 2, 1)


def _factor_check(value: Any) -> str | None:
    values = [value] if isinstance(value, int | np.integer) else value
    try:
        ok = len(values) in (1, 2) and all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in values
        )
    except TypeError:
        ok = False
    return None if ok else f"must be a positive integer or a pair [fy, fx] of them; got {value!r}"


class BinFrames(FrameNode):
    """Every ``fy x fx`` box of pixels summed (``method="sum"``) or averaged (``"mean"``).

    The factors must divide the frame shape. Output dtype: ``dtype`` if given; else
    for ``sum`` the dtype numpy's ``sum`` gives (64-bit for integers, so nothing
    overflows), for ``mean`` ``result_type(input, float32)``.

    Examples
    --------
    >>> import numpy as np
    >>> node = BinFrames(factor=[1, 2], method="mean")
    >>> node.output_signature((2, 4), np.dtype("uint16"))
    ((2, 2), dtype('float32'))
    >>> node.apply(np.arange(8, dtype=np.uint16).reshape(1, 2, 4))
    array([[[0.5, 2.5],
            [4.5, 6.5]]], dtype=float32)
    >>> BinFrames(factor=3).output_signature((6, 4), np.dtype("uint16"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    detflow.errors.ParameterError: parameter 'factor' must divide the frame shape (6, 4); got (3, 3): ...
    """

    type_name = "bin"
    sparse_input = True
    params_spec = (
        Param("factor", object, default=2, doc="integer factor, or [fy, fx]", check=_factor_check),
        Param("method", str, default="sum", doc="'sum' or 'mean'", check=one_of("sum", "mean")),
        Param("dtype", "dtype", default=None, doc="output dtype (default: see the class docstring)"),
    )

    @property
    def factors(self) -> tuple[int, int]:
        f = self.params.factor
        fy, fx = (f, f) if isinstance(f, int | np.integer) else (tuple(f) * 2)[:2] if len(f) == 1 else tuple(f)
        return int(fy), int(fx)

    def _out_dtype(self, dtype: np.dtype) -> np.dtype:
        if self.params.dtype is not None:
            return np.dtype(self.params.dtype)
        if self.params.method == "mean":
            return np.result_type(dtype, np.float32)
        return np.zeros(0, dtype=dtype).sum().dtype  # numpy's accumulator: 64-bit for integers

    def output_signature(self, sig_shape: tuple[int, ...], dtype: np.dtype) -> tuple[tuple[int, ...], np.dtype]:
        h, w = self._need_2d(sig_shape)
        fy, fx = self.factors
        for size, f in ((h, fy), (w, fx)):
            if size % f:
                raise ParameterError("factor", f"must divide the frame shape {(h, w)}; got {(fy, fx)}: "
                                     f"{size} is not a multiple of {f}")
        return (h // fy, w // fx), self._out_dtype(np.dtype(dtype))

    def apply(self, block: Any, *, sig_shape: tuple[int, ...] | None = None) -> Any:
        fy, fx = self.factors
        if is_sparse(block):
            return self._apply_sparse(block, sig_shape)
        n, h, w = block.shape
        (ho, wo), out_dtype = self.output_signature((h, w), block.dtype)
        boxes = block.reshape(n, ho, fy, wo, fx)
        if self.params.method == "sum":
            acc = np.result_type(out_dtype, np.zeros(0, dtype=block.dtype).sum().dtype)
            return boxes.sum(axis=(2, 4), dtype=acc).astype(out_dtype, copy=False)
        acc = np.result_type(out_dtype, np.float32)
        out = boxes.sum(axis=(2, 4), dtype=np.float64 if acc.itemsize > 4 or fy * fx > 256 else acc)
        out *= 1.0 / (fy * fx)
        return out.astype(out_dtype, copy=False)

    def _apply_sparse(self, block: Any, sig_shape: tuple[int, ...] | None) -> Any:
        import scipy.sparse as sp

        if sig_shape is None:
            raise ParameterError("sig_shape", "bin: a sparse block needs apply(block, sig_shape=(h, w))")
        (ho, wo), out_dtype = self.output_signature(tuple(sig_shape), block.dtype)
        h, w = (int(s) for s in sig_shape)
        if block.shape[1] != h * w:
            raise ParameterError("sig_shape", f"is {(h, w)}, {h * w} pixels; the sparse block has "
                                 f"{block.shape[1]} columns")
        fy, fx = self.factors
        y, x = np.divmod(np.arange(h * w), w)
        target = (y // fy) * wo + x // fx
        weight = 1.0 / (fy * fx) if self.params.method == "mean" else 1
        acc = np.float64 if out_dtype.kind == "f" or self.params.method == "mean" else out_dtype
        kind = sp.csr_array if isinstance(block, sp.sparray) else sp.csr_matrix
        matrix = kind((np.full(h * w, weight, dtype=acc), (np.arange(h * w), target)), shape=(h * w, ho * wo))
        return kind(block.tocsr().astype(acc) @ matrix).astype(out_dtype)
