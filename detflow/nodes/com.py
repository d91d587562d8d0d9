"""Centre of mass of each frame and the derived field (LiberTEM 0.16's ``CoMUDF``).

Per tile, one product with three masks (selection, ``y * selection``,
``x * selection``) gives each frame's intensity and first moments; everything else
is computed in ``get_results`` from those, following LiberTEM's conventions:

* ``raw_com = (my / s, mx / s)``; NaN where the selected intensity ``s`` is 0
  (LiberTEM reports a zero shift there; NaN keeps "no signal" visible).
* ``raw_shifts = raw_com - (cy, cx)``.
* ``field``: with ``flip_y`` the y shift is negated first, then the (y, x) vector is
  multiplied by ``[[cos a, sin a], [-sin a, cos a]]``, ``a = scan_rotation`` in degrees
  (LiberTEM's ``rotate_deg(a) @ flip_y()``).
* ``divergence = d field_y/dy + d field_x/dx`` and ``curl = d field_y/dx - d field_x/dy``
  by ``np.gradient`` on the nav grid, NaN outside the ROI (and next to it, where a
  difference touches a NaN). A nav axis of length 1 contributes 0. As in LiberTEM, the
  navigation (and signal) must be 2-D: anything else is a ``ValueError`` before the run.
* ``regression`` (:class:`RegressionOptions`, or a ``(3, 2)`` array of coefficients):
  ``SUBTRACT_MEAN`` subtracts the mean field over the merged positions, ``SUBTRACT_LINEAR``
  a plane ``c0 + c1 * y + c2 * x`` fitted by least squares (per component); the
  coefficients are the ``regression`` result (``(3, 2)`` float64, rows ``c0, c1, c2``),
  and ``field``, its components, ``magnitude``, ``divergence`` and ``curl`` are computed
  from the corrected field, as LiberTEM 0.16 does.
"""

from __future__ import annotations

import enum
import math
from typing import Any, NamedTuple

import numpy as np

from detflow.errors import ConfigurationError, ParameterError
from detflow.nodes import backends as bk
from detflow.nodes.base import UDF, BufferDecl
from detflow.nodes.masks import MaskStack, circular, ring
from detflow.nodes.masks_udf import apply_mask_stack
from detflow.nodes.params import Param, check_params, non_negative, positive

__all__ = ["CoMParams", "CoMUDF", "RegressionOptions"]


class RegressionOptions(enum.IntEnum):
    """What ``CoMUDF`` subtracts from the field (LiberTEM's values)."""

    NO_REGRESSION = -1
    SUBTRACT_MEAN = 0
    SUBTRACT_LINEAR = 1


class CoMParams(NamedTuple):
    """LiberTEM's parameter bundle: ``CoMUDF(com_params=CoMParams(...))``."""

    cy: float | None = None
    cx: float | None = None
    r: float = float("inf")
    ri: float | None = 0.0
    scan_rotation: float = 0.0
    flip_y: bool = False
    regression: Any = RegressionOptions.NO_REGRESSION


def _regression(value: Any) -> str | None:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return None if int(value) in (-1, 0, 1) else f"must be -1, 0, 1 or a (3, 2) array; got {value!r}"
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return f"must be a RegressionOptions value or a (3, 2) array; got {value!r}"
    return None if arr.shape == (3, 2) else f"a coefficient array must have shape (3, 2); got {arr.shape}"

_NAV_RESULTS = ("raw_com", "raw_shifts", "field", "field_y", "field_x", "magnitude")


def _finite(value: Any) -> str | None:
    return None if math.isfinite(value) else f"must be a finite number; got {value!r}"


class CoMUDF(UDF):
    """Centre-of-mass analysis within a disk or ring around ``(cy, cx)``.

    Build it with :meth:`with_params` (LiberTEM 0.16 API). Results (``nav``):
    ``raw_com`` and ``raw_shifts`` ``(y, x)``, ``field`` ``(y, x)`` after flip and
    rotation, ``field_y``, ``field_x``, ``magnitude``, ``divergence``, ``curl``; see
    the module docstring for the formulas.

    Examples
    --------
    >>> udf = CoMUDF.with_params(cy=8, cx=8, r=5)
    >>> res = ctx.run_udf(dataset=ds, udf=udf)
    >>> res["field"].data.shape == (*ds.shape.nav, 2)
    True
    """

    sig_cut_tiles = False  # whole frames: the kernels read every pixel of a frame at once

    params_spec = (
        Param("cy", float, default=None, doc="y of the centre (default: sig centre)", check=_finite),
        Param("cx", float, default=None, doc="x of the centre (default: sig centre)", check=_finite),
        Param("r", float, default=math.inf, doc="outer radius in pixels", check=positive),
        Param("ri", float, default=0.0, doc="inner radius in pixels", check=non_negative),
        Param("scan_rotation", float, default=0.0, doc="degrees", check=_finite),
        Param("flip_y", bool, default=False, doc="negate the y shift before rotating"),
        Param("regression", object, default=-1, check=_regression,
              doc="-1: none, 0: subtract the mean field, 1: subtract a fitted plane, or (3, 2) coefficients"),
    )

    extra_dims = {"raw_com": ("yx",), "raw_shifts": ("yx",), "field": ("yx",)}
    buffer_attrs = {
        "raw_com": {"long_name": "centre of mass", "units": "px"},
        "raw_shifts": {"long_name": "shift of the centre of mass", "units": "px"},
        "field": {"long_name": "shift field (rotated, regression removed)", "units": "px"},
        "field_y": {"long_name": "shift field, y", "units": "px"},
        "field_x": {"long_name": "shift field, x", "units": "px"},
        "magnitude": {"long_name": "magnitude of the shift field", "units": "px"},
        "divergence": {"long_name": "divergence of the shift field"},
        "curl": {"long_name": "curl of the shift field"},
        "regression": {"long_name": "regression coefficients"},
    }

    def __init__(
        self,
        com_params: Any = None,
        *,
        cy: float | None = None,
        cx: float | None = None,
        r: float = math.inf,
        ri: float = 0.0,
        scan_rotation: float = 0.0,
        flip_y: bool = False,
        regression: Any = RegressionOptions.NO_REGRESSION,
    ) -> None:
        kwargs = dict(cy=cy, cx=cx, r=r, ri=ri, scan_rotation=scan_rotation, flip_y=flip_y, regression=regression)
        if com_params is not None:  # LiberTEM's CoMUDF(CoMParams(...))
            kwargs.update({k: v for k, v in com_params._asdict().items() if k in kwargs})
        if kwargs["ri"] is None:
            kwargs["ri"] = 0.0
        if isinstance(kwargs["regression"], enum.IntEnum):
            kwargs["regression"] = int(kwargs["regression"])
        super().__init__(**kwargs)

    @classmethod
    def with_params(
        cls,
        *,
        cy: float | None = None,
        cx: float | None = None,
        r: float = math.inf,
        ri: float = 0.0,
        scan_rotation: float = 0.0,
        flip_y: bool = False,
        regression: Any = RegressionOptions.NO_REGRESSION,
    ) -> CoMUDF:
        """A CoMUDF with these parameters; ``ri >= r`` raises :class:`ParameterError` (a ``ValueError``)."""
        udf = cls(cy=cy, cx=cx, r=r, ri=ri, scan_rotation=scan_rotation, flip_y=flip_y, regression=regression)
        udf._check_radii()
        return udf

    def _check_radii(self) -> None:
        check_params(self.params_spec, self.kwargs)  # r < 0 says 'r', not 'ri'
        p = self.params
        if p.ri is not None and p.r is not None and not p.ri < p.r:
            raise ParameterError("ri", f"must be < r ({p.r}); got {p.ri}")

    def validate(self, meta: Any) -> None:
        self._check_radii()
        if len(meta.sig_shape) != 2:
            raise ConfigurationError(f"CoMUDF only works with 2D sig shape; got sig_shape {meta.sig_shape}")
        if len(meta.nav_shape) != 2:
            raise ConfigurationError(f"CoMUDF only works with 2D nav shape; got nav_shape {meta.nav_shape}")
        sy, sx = meta.sig_shape  # a centre off the frame selects nothing, or a lopsided part: NaN or nonsense
        for name, value, size in (("cy", self.params.cy, sy), ("cx", self.params.cx, sx)):
            if value is not None and not -0.5 <= value <= size - 0.5:
                raise ParameterError(name, f"the centre must lie in the {sy}x{sx} frame "
                                           f"(-0.5 <= {name} <= {size - 0.5}); got {value}")

    def get_params(self) -> CoMParams:
        """The parameters with the centre filled in (LiberTEM's ``get_params``)."""
        p = self.params
        cy, cx = self._centre()
        return CoMParams(cy=cy, cx=cx, r=p.r, ri=p.ri, scan_rotation=p.scan_rotation, flip_y=p.flip_y,
                         regression=p.regression)

    def _centre(self) -> tuple[float, float]:
        sy, sx = self.meta.sig_shape
        cy, cx = self.params.cy, self.params.cx
        return (sy // 2 if cy is None else cy), (sx // 2 if cx is None else cx)

    def get_preferred_input_dtype(self) -> Any:
        return self.USE_NATIVE_DTYPE

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        dtype = np.result_type(self.meta.input_dtype, np.float32)
        bufs = {"raw_mask_result": self.buffer("nav", (3,), dtype, use="private")}
        for name in _NAV_RESULTS + ("divergence", "curl"):
            extra = (2,) if name in ("raw_com", "raw_shifts", "field") else ()
            bufs[name] = self.buffer("nav", extra, dtype, use="result_only")
        bufs["regression"] = self.buffer("single", (3, 2), np.float64, use="result_only")
        return bufs

    def get_task_data(self) -> dict[str, Any]:
        h, w = self.meta.sig_shape
        cy, cx = self._centre()
        p = self.params
        sel = circular(cx, cy, w, h, p.r) if p.ri == 0 else ring(cx, cy, w, h, p.r, p.ri)
        dtype = np.result_type(self.meta.input_dtype, np.float32)
        y, x = np.indices((h, w), dtype=dtype)
        dense = np.stack([sel.reshape(-1), (y * sel).reshape(-1), (x * sel).reshape(-1)], axis=1)
        return {"stack": MaskStack(3, dense.dtype, dense=np.ascontiguousarray(dense, dtype))}

    def get_backends(self) -> Any:
        """numpy, scipy.sparse and pydata sparse input (LiberTEM's built-ins take these too)."""
        return bk.BUILTIN_BACKENDS

    def process_tile(self, tile: np.ndarray) -> None:
        apply_mask_stack(tile, self.task_data.stack, self.results.raw_mask_result)

    def get_results(self) -> dict[str, Any]:
        raw = self.results.raw_mask_result
        dtype = raw.dtype
        s = raw[:, 0]
        com = np.full((raw.shape[0], 2), np.nan, dtype=dtype)
        np.divide(raw[:, 1:], s[:, None], out=com, where=s[:, None] != 0)
        cy, cx = self._centre()
        shifts = com - np.array([cy, cx], dtype=dtype)
        sy = -shifts[:, 0] if self.params.flip_y else shifts[:, 0]
        sx = shifts[:, 1]
        a = math.radians(self.params.scan_rotation)
        field = np.stack([math.cos(a) * sy + math.sin(a) * sx, -math.sin(a) * sy + math.cos(a) * sx], axis=1).astype(
            dtype
        )
        coeffs = self._regress(field)
        div, curl = self._derivatives(field)
        return {
            "regression": coeffs,
            "raw_com": com,
            "raw_shifts": shifts,
            "field": field,
            "field_y": field[:, 0].copy(),
            "field_x": field[:, 1].copy(),
            "magnitude": np.hypot(field[:, 0], field[:, 1]),
            "divergence": div.astype(dtype),
            "curl": curl.astype(dtype),
        }

    def _regress(self, field: np.ndarray) -> np.ndarray:
        """Fit (or take) the regression coefficients and subtract them from ``field`` in place."""
        option = self.params.regression
        coeffs = np.zeros((3, 2))
        nav = tuple(self.meta.nav_shape)
        roi = self.meta.roi
        flat = np.arange(math.prod(nav)) if roi is None else np.flatnonzero(roi.reshape(-1))
        yx = np.stack(np.unravel_index(flat, nav), axis=1).astype(np.float64)  # (rows, 2)
        inp = np.concatenate([np.ones((len(flat), 1)), yx], axis=1)
        merged = self.meta.get_valid_nav_mask()
        valid = np.ones(len(flat), dtype=bool) if merged is None else merged.copy()
        valid &= np.isfinite(field).all(axis=1)
        if isinstance(option, int | np.integer):
            if option == RegressionOptions.SUBTRACT_MEAN and valid.any():
                coeffs[0] = field[valid].mean(axis=0)
            elif option == RegressionOptions.SUBTRACT_LINEAR and valid.any():
                coeffs[:] = np.linalg.lstsq(inp[valid], field[valid].astype(np.float64), rcond=None)[0]
        else:
            coeffs[:] = np.asarray(option, dtype=np.float64)
        if np.any(coeffs):
            field[valid] -= (inp[valid] @ coeffs).astype(field.dtype)
        return coeffs

    def _derivatives(self, field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nav = tuple(self.meta.nav_shape)
        roi = self.meta.roi
        valid = None if roi is None else roi.reshape(-1)

        def grid(values: np.ndarray) -> np.ndarray:
            full = np.full(math.prod(nav), np.nan)
            if valid is None:
                full[:] = values
            else:
                full[valid] = values
            return full.reshape(nav)

        def d(values: np.ndarray, axis: int) -> np.ndarray:
            return np.gradient(values, axis=axis) if values.shape[axis] > 1 else np.zeros_like(values)

        fy, fx = grid(field[:, 0]), grid(field[:, 1])
        if len(nav) == 2:
            div = d(fy, 0) + d(fx, 1)
            curl = d(fy, 1) - d(fx, 0)
        elif len(nav) == 1:
            div = d(fx, 0)
            curl = np.full(nav, np.nan)
        else:
            div = curl = np.full(nav, np.nan)
        if valid is None:
            return div.reshape(-1), curl.reshape(-1)
        return div.reshape(-1)[valid], curl.reshape(-1)[valid]
