"""``idpc``: the integrated centre-of-mass phase, by Fourier integration of the CoM field.

Conventions. The inputs are the two components of a CoM field on a 2-D scan,
nav-shaped ``(ny, nx)`` (``field_y`` and ``field_x`` as :class:`~detflow.nodes.com.CoMUDF`
gives them, after its flip and scan rotation): axis 0 is the scan's y (rows), axis 1
its x. The output ``phase`` is the function whose gradient per scan step is that
field, ``d phase / dy = field_y`` and ``d phase / dx = field_x`` (positive where the
field points), in the field's units times one scan step. It is the least-squares
integral (the curl-free part of the field); the constant is fixed by making its mean 0.

Method. With ``boundary="mirror"`` (the default, for ordinary non-periodic scans) the
phase is the least-squares solution of ``phase[i + 1] - phase[i] = (g[i] + g[i + 1]) / 2``
along each axis (forward differences against the field averaged onto the half steps,
exact for a linear phase). Its normal equations are a Poisson equation with Neumann
(mirror) boundaries, solved with the DCT-II: the same as mirror-padding the field to
``(2 ny, 2 nx)`` (odd along its own axis, even along the other) and integrating that
periodically, without the ringing a Fourier derivative of the mirrored field's jumps
would add. With ``boundary="periodic"`` the field is taken as periodic over the scan and
integrated spectrally: ``phase_hat = -i (ky Fy + kx Fx) / (ky**2 + kx**2)``, ``k = 2 pi
fftfreq(n)`` per scan step, the zero frequency set to 0.

Partial results. Positions where either component is NaN (not scanned yet in a live
run) are integrated as a zero field and are NaN in the output; the mean is taken over
the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.fft import dctn, idctn

from detflow.errors import ParameterError
from detflow.nodes.params import Param, one_of
from detflow.nodes.results.base import BufferInfo, ResultNode

__all__ = ["IDPCResult", "integrate_gradient"]


def integrate_gradient(field_y: np.ndarray, field_x: np.ndarray, *, boundary: str = "mirror") -> np.ndarray:
    """The phase whose gradient per step is ``(field_y, field_x)``; see the module docstring.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.indices((24, 30), dtype=float)
    >>> phase = integrate_gradient(np.full((24, 30), 0.5), np.full((24, 30), -1.0))
    >>> bool(np.allclose(phase, 0.5 * y - x - (0.5 * y - x).mean(), atol=0.05))
    True
    """
    gy = np.asarray(field_y, dtype=np.float64)
    gx = np.asarray(field_x, dtype=np.float64)
    valid = np.isfinite(gy) & np.isfinite(gx)
    phase = np.full(gy.shape, np.nan)
    if not valid.any():
        return phase
    gy = np.where(valid, gy, 0.0)
    gx = np.where(valid, gx, 0.0)
    full = _neumann(gy, gx) if boundary == "mirror" else _periodic(gy, gx)
    phase[valid] = full[valid] - full[valid].mean()
    return phase


def _periodic(gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    ky = 2 * np.pi * np.fft.fftfreq(gy.shape[0])[:, None]
    kx = 2 * np.pi * np.fft.rfftfreq(gy.shape[1])[None, :]
    k2 = ky**2 + kx**2
    k2[0, 0] = 1.0
    spectrum = (ky * np.fft.rfft2(gy) + kx * np.fft.rfft2(gx)) * (-1j / k2)
    spectrum[0, 0] = 0.0
    return np.fft.irfft2(spectrum, s=gy.shape)


def _neumann(gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    ny, nx = gy.shape
    # right-hand side D^T g of the normal equations D^T D phase = D^T g
    rhs = np.zeros((ny, nx))
    hy = (gy[1:, :] + gy[:-1, :]) / 2
    hx = (gx[:, 1:] + gx[:, :-1]) / 2
    rhs[:-1, :] -= hy
    rhs[1:, :] += hy
    rhs[:, :-1] -= hx
    rhs[:, 1:] += hx
    lam = (4 * np.sin(np.pi * np.arange(ny) / (2 * ny)) ** 2)[:, None] + (
        4 * np.sin(np.pi * np.arange(nx) / (2 * nx)) ** 2
    )[None, :]
    lam[0, 0] = 1.0
    spectrum = dctn(rhs, type=2, norm="ortho") / lam
    spectrum[0, 0] = 0.0
    return np.asarray(idctn(spectrum, type=2, norm="ortho"))


class IDPCResult(ResultNode):
    """Integrated CoM phase (``phase``, nav-shaped ``(ny, nx)``) of a ``com`` node's field.

    Parameters
    ----------
    field_y, field_x
        The input's results holding the field components.
    boundary
        ``"mirror"`` (default; for ordinary, non-periodic scans) or ``"periodic"``.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.indices((32, 32), dtype=float)
    >>> phi = np.cos(2 * np.pi * x / 32) + np.sin(2 * np.pi * y / 32)
    >>> field = {"field_y": 2 * np.pi / 32 * np.cos(2 * np.pi * y / 32),
    ...          "field_x": -2 * np.pi / 32 * np.sin(2 * np.pi * x / 32)}
    >>> out = IDPCResult(boundary="periodic").compute({"com": field})
    >>> bool(np.allclose(out["phase"], phi - phi.mean(), atol=1e-3))
    True
    """

    type_name = "idpc"
    outputs = ("phase",)
    params_spec = (
        Param("field_y", str, default="field_y", doc="the input's result holding the y component"),
        Param("field_x", str, default="field_x", doc="the input's result holding the x component"),
        Param("boundary", str, default="mirror", doc="'mirror' (non-periodic scans) or 'periodic'",
              check=one_of("mirror", "periodic")),
    )

    def check_inputs(self, inputs: Mapping[str, Mapping[str, BufferInfo]]) -> None:
        shapes = {}
        for parameter in ("field_y", "field_x"):
            node_id, info = self._buffer(inputs, parameter)
            if info.kind != "nav" or len(info.shape) != 2:
                raise ParameterError(parameter, f"must name a nav result on a 2-D scan; "
                                     f"{node_id}.{self.params[parameter]} is a {info.kind} result of "
                                     f"shape {tuple(info.shape)}")
            shapes[parameter] = tuple(info.shape)
        if shapes["field_y"] != shapes["field_x"]:
            raise ParameterError("field_x", f"has the shape {shapes['field_x']}; field_y has {shapes['field_y']}")

    def compute(self, inputs: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
        node_id, fy = self._buffer(inputs, "field_y")
        _, fx = self._buffer(inputs, "field_x")
        fy, fx = np.asarray(fy), np.asarray(fx)
        for parameter, arr in (("field_y", fy), ("field_x", fx)):
            if arr.ndim != 2:
                raise ParameterError(parameter, f"must name a result on a 2-D scan; "
                                     f"{node_id}.{self.params[parameter]} has the shape {arr.shape}")
        if fy.shape != fx.shape:
            raise ParameterError("field_x", f"has the shape {fx.shape}; field_y has {fy.shape}")
        return {"phase": integrate_gradient(fy, fx, boundary=self.params.boundary)}
