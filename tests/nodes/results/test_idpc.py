"""idpc: integrate the gradient of a known phase and get the phase back (up to a constant)."""

from __future__ import annotations

import numpy as np
import pytest

from detflow.errors import ParameterError
from detflow.nodes.results import BufferInfo, result_node_class


def _phase_and_field(ny, nx):
    """A smooth, non-periodic phase on the scan grid and its exact gradient per scan step."""
    y, x = np.indices((ny, nx), dtype=np.float64)
    g = 0.8 * np.exp(-((y - ny / 3) ** 2 + (x - nx / 2) ** 2) / (0.05 * ny * nx))
    phi = np.sin(y / 6.0) * np.cos(x / 9.0) + 0.03 * x - 0.02 * y + g
    gy = np.cos(y / 6.0) / 6.0 * np.cos(x / 9.0) - 0.02 + g * (-2 * (y - ny / 3) / (0.05 * ny * nx))
    gx = -np.sin(y / 6.0) * np.sin(x / 9.0) / 9.0 + 0.03 + g * (-2 * (x - nx / 2) / (0.05 * ny * nx))
    return phi, gy, gx


@pytest.mark.parametrize(("ny", "nx"), [(32, 32), (31, 45), (48, 17)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_phase_from_its_gradient(ny, nx, dtype) -> None:
    phi, gy, gx = _phase_and_field(ny, nx)
    out = result_node_class("idpc")().compute({"com": {"field_y": gy.astype(dtype), "field_x": gx.astype(dtype)}})
    phase = out["phase"]
    assert phase.shape == (ny, nx)
    err = phase - (phi - phi.mean())
    assert np.abs(err).max() < 2e-3 * np.ptp(phi)
    assert abs(phase.mean()) < 1e-9


def test_swapped_components_do_not_integrate_to_the_phase() -> None:
    phi, gy, gx = _phase_and_field(32, 40)
    out = result_node_class("idpc")().compute({"com": {"field_y": gx, "field_x": gy}})
    assert np.abs(out["phase"] - (phi - phi.mean())).max() > 0.1 * np.ptp(phi)


def test_periodic_boundary_for_periodic_fields() -> None:
    n = 40
    y, x = np.indices((n, n), dtype=np.float64)
    w = 2 * np.pi / n
    phi = np.sin(w * x) * np.cos(2 * w * y)
    gy, gx = -2 * w * np.sin(w * x) * np.sin(2 * w * y), w * np.cos(w * x) * np.cos(2 * w * y)
    out = result_node_class("idpc")(boundary="periodic").compute({"com": {"field_y": gy, "field_x": gx}})
    np.testing.assert_allclose(out["phase"], phi - phi.mean(), atol=1e-10)


def test_partial_results_are_nan_where_not_scanned() -> None:
    phi, gy, gx = _phase_and_field(32, 32)
    gy, gx = gy.copy(), gx.copy()
    gy[20:], gx[20:] = np.nan, np.nan
    gx[3, 4] = np.nan
    phase = result_node_class("idpc")().compute({"com": {"field_y": gy, "field_x": gx}})["phase"]
    assert np.isnan(phase[20:]).all() and np.isnan(phase[3, 4])
    assert np.isfinite(phase[:20]).sum() == 20 * 32 - 1
    everything_missing = np.full((4, 5), np.nan)
    out = result_node_class("idpc")().compute({"c": {"field_y": everything_missing, "field_x": everything_missing}})
    assert np.isnan(out["phase"]).all() and out["phase"].shape == (4, 5)


def test_custom_buffer_names_and_errors() -> None:
    phi, gy, gx = _phase_and_field(16, 16)
    node = result_node_class("idpc")(field_y="dy", field_x="dx")
    assert node.output_names() == ("phase",)
    assert node.compute({"c": {"dy": gy, "dx": gx}})["phase"].shape == (16, 16)
    with pytest.raises(ParameterError, match="parameter 'field_y' names the result 'dy'"):
        node.compute({"c": {"field_y": gy, "field_x": gx}})
    nav = BufferInfo("nav", (16, 16), np.dtype("float32"))
    node.check_inputs({"c": {"dy": nav, "dx": nav}})
    with pytest.raises(ParameterError, match="parameter 'field_x' must name a nav result on a 2-D scan"):
        node.check_inputs({"c": {"dy": nav, "dx": BufferInfo("nav", (256,), np.dtype("float32"))}})
    with pytest.raises(ParameterError, match=r"parameter 'field_x' has the shape \(16, 8\)"):
        node.check_inputs({"c": {"dy": nav, "dx": BufferInfo("nav", (16, 8), np.dtype("float32"))}})
    with pytest.raises(ParameterError, match="parameter 'field_y' must name a result on a 2-D scan"):
        node.compute({"c": {"dy": gy.ravel(), "dx": gx.ravel()}})
    with pytest.raises(ParameterError, match="parameter 'boundary' must be one of"):
        result_node_class("idpc")(boundary="zero")
