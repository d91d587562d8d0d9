"""``find_disk``: centre and radius of the bright-field disk in a sum frame.

The disk is the set of pixels brighter than ``threshold`` times the frame's maximum;
``cx`` and ``cy`` are the plain (unweighted) mean column and row of those pixels, and
``r = sqrt(count / pi)``, the radius of a disk of the same area. Pixel ``(y, x)`` has
its centre at ``(y, x)``, the convention of :class:`~detflow.nodes.com.CoMUDF`, so
``com`` can take ``cx``/``cy`` by reference. NaN pixels (not summed yet in a live
run) are ignored; a frame with no positive maximum gives NaN for all three.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from detflow.errors import ParameterError
from detflow.nodes.params import Param
from detflow.nodes.results.base import BufferInfo, ResultNode

__all__ = ["FindDiskResult"]


def _fraction(value: Any) -> str | None:
    return None if 0 <= value < 1 else f"must be >= 0 and < 1 (a fraction of the maximum); got {value!r}"


class FindDiskResult(ResultNode):
    """The bright-field disk of a 2-D frame: ``cx``, ``cy``, ``r`` (floats, pixels).

    Parameters
    ----------
    buffer
        The input node's result holding the frame (``"intensity"`` for ``sum``).
    threshold
        Pixels above ``threshold * max`` belong to the disk.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.indices((64, 80))
    >>> frame = ((x - 41.0) ** 2 + (y - 30.0) ** 2 < 12.0 ** 2) * 100.0 + 1.0
    >>> disk = FindDiskResult(threshold=0.5).compute({"sum": {"intensity": frame}})
    >>> {k: round(v, 1) for k, v in disk.items()}
    {'cx': 41.0, 'cy': 30.0, 'r': 11.8}
    """

    type_name = "find_disk"
    outputs = ("cx", "cy", "r")
    params_spec = (
        Param("buffer", str, default="intensity", doc="the input's result holding the 2-D frame"),
        Param("threshold", float, default=0.5, doc="fraction of the maximum a disk pixel exceeds", check=_fraction),
    )

    def check_inputs(self, inputs: Mapping[str, Mapping[str, BufferInfo]]) -> None:
        node_id, info = self._buffer(inputs, "buffer")
        if len(info.shape) != 2 or info.kind == "nav":
            raise ParameterError("buffer", f"must name a 2-D frame; {node_id}.{self.params.buffer} is a "
                                 f"{info.kind} result of shape {tuple(info.shape)}")

    def compute(self, inputs: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
        node_id, frame = self._buffer(inputs, "buffer")
        frame = np.asarray(frame)
        if frame.ndim != 2:
            raise ParameterError("buffer", f"must name a 2-D frame; {node_id}.{self.params.buffer} has the "
                                 f"shape {frame.shape}")
        nan = {"cx": math.nan, "cy": math.nan, "r": math.nan}
        if not np.isfinite(frame).any():
            return nan
        top = float(np.nanmax(frame))
        if not top > 0:
            return nan
        ys, xs = np.nonzero(frame > self.params.threshold * top)
        count = len(ys)
        return {"cx": float(xs.mean()), "cy": float(ys.mean()), "r": math.sqrt(count / math.pi)}
