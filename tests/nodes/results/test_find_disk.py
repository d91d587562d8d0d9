"""find_disk on generated disks with known centre and radius."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detflow.errors import ParameterError
from detflow.nodes.results import BufferInfo, result_node_class


def _disk(h, w, cx, cy, r, *, bright=1000.0, background=20.0, dtype=np.float32):
    y, x = np.indices((h, w))
    inside = (x - cx) ** 2 + (y - cy) ** 2 <= r**2
    return (np.where(inside, bright, background)).astype(dtype), inside


@pytest.mark.parametrize(("h", "w", "cx", "cy", "r"), [(64, 64, 31.5, 30.0, 10.0), (65, 97, 60.3, 20.7, 14.2),
                                                       (33, 31, 10.0, 22.0, 4.5)])
@pytest.mark.parametrize("dtype", [np.uint32, np.float32, np.float64])
def test_known_disk(h, w, cx, cy, r, dtype) -> None:
    frame, inside = _disk(h, w, cx, cy, r, dtype=dtype)
    out = result_node_class("find_disk")().compute({"sum": {"intensity": frame}})
    assert set(out) == {"cx", "cy", "r"} and all(isinstance(v, float) for v in out.values())
    ys, xs = np.nonzero(inside)  # the definition: plain mean of the pixels above half the max
    assert out["cx"] == pytest.approx(xs.mean()) and out["cy"] == pytest.approx(ys.mean())
    assert out["r"] == pytest.approx(math.sqrt(inside.sum() / math.pi))
    assert out["cx"] == pytest.approx(cx, abs=0.1) and out["cy"] == pytest.approx(cy, abs=0.1)
    assert out["r"] == pytest.approx(r, abs=0.5)  # a disk of whole pixels


def test_threshold_and_buffer_parameters() -> None:
    y, x = np.indices((50, 50))
    frame = np.exp(-((x - 20.0) ** 2 + (y - 25.0) ** 2) / (2 * 5.0**2))  # a Gaussian: threshold sets the size
    node = result_node_class("find_disk")
    small = node(threshold=0.9, buffer="sum_frame").compute({"s": {"sum_frame": frame}})
    large = node(threshold=0.1, buffer="sum_frame").compute({"s": {"sum_frame": frame}})
    # above t * max  <=>  d**2 < -2 sigma**2 ln t
    for out, t in ((small, 0.9), (large, 0.1)):
        assert out["r"] == pytest.approx(math.sqrt(-2 * 25.0 * math.log(t)), abs=0.5)
        assert (out["cx"], out["cy"]) == pytest.approx((20.0, 25.0))


def test_nan_tolerant() -> None:
    frame, inside = _disk(40, 40, 20.0, 18.0, 8.0)
    partial = frame.copy()
    partial[:5] = np.nan  # rows not summed yet
    out = result_node_class("find_disk")().compute({"sum": {"intensity": partial}})
    assert (out["cx"], out["cy"]) == pytest.approx((20.0, 18.0), abs=0.1)
    empty = result_node_class("find_disk")().compute({"sum": {"intensity": np.full((4, 4), np.nan)}})
    assert all(math.isnan(v) for v in empty.values())
    dark = result_node_class("find_disk")().compute({"sum": {"intensity": np.zeros((4, 4))}})
    assert all(math.isnan(v) for v in dark.values())


def test_errors_name_the_parameter() -> None:
    node = result_node_class("find_disk")()
    with pytest.raises(ParameterError, match="parameter 'buffer' names the result 'intensity', which input node "
                       "'com' does not have; it has: field_x"):
        node.compute({"com": {"field_x": np.zeros((3, 3))}})
    with pytest.raises(ParameterError, match="parameter 'buffer' must name a 2-D frame"):
        node.check_inputs({"s": {"intensity": BufferInfo("nav", (8, 8), np.dtype("float32"))}})
    with pytest.raises(ParameterError, match="parameter 'buffer' must name a 2-D frame"):
        node.compute({"s": {"intensity": np.zeros(5)}})
    node.check_inputs({"s": {"intensity": BufferInfo("sig", (8, 8), np.dtype("float32"))}})
    with pytest.raises(ParameterError, match="parameter 'threshold' must be >= 0 and < 1"):
        result_node_class("find_disk")(threshold=1.0)


def test_centre_is_the_plain_mean_not_intensity_weighted() -> None:
    y, x = np.indices((40, 40))
    inside = (x - 20.0) ** 2 + (y - 15.0) ** 2 <= 8.0**2
    frame = np.where(inside, 600.0 + 10.0 * x, 5.0)  # brighter to the right, all above half the maximum
    out = result_node_class("find_disk")().compute({"sum": {"intensity": frame}})
    assert (out["cx"], out["cy"]) == pytest.approx((20.0, 15.0))
