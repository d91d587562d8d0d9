"""Apply a plain function to every frame (LiberTEM's ``AutoUDF``, behind ``ctx.map``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from detflow.nodes.base import UDF, BufferDecl
from detflow.nodes.params import Param

__all__ = ["AutoUDF"]


def _callable(value: Any) -> str | None:
    return None if callable(value) else f"must be callable; got {value!r}"


class AutoUDF(UDF):
    """``result[i] = f(frame_i)``: a ``nav`` buffer shaped and typed like ``f``'s output.

    The extra shape and dtype come from ``np.asarray(f(np.ones(sig_shape, input_dtype)))``;
    frames arrive as float32 (or wider), as in LiberTEM.

    Parameters
    ----------
    f
        Function of one frame, returning a scalar or an array of fixed shape.
    monitor
        Also return ``monitor``: the result of the last position merged so far (a
        ``single`` buffer), as LiberTEM's ``AutoUDF(monitor=True)``.

    Examples
    --------
    >>> res = ctx.run_udf(dataset=ds, udf=AutoUDF(f=np.max))
    >>> res["result"].data.shape == ds.shape.nav
    True
    """

    params_spec = (
        Param("f", object, doc="function applied to each frame", check=_callable),
        Param("monitor", bool, default=False, doc="also return the latest merged position's result"),
    )

    def __init__(self, f: Callable[[np.ndarray], Any], monitor: bool = False) -> None:
        super().__init__(f=f, monitor=monitor)

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        probe = np.ones(self.meta.sig_shape, dtype=self.meta.input_dtype)
        sample = np.asarray(self.params.f(probe))
        bufs = {"result": self.buffer(kind="nav", extra_shape=sample.shape, dtype=sample.dtype)}
        if self.params.monitor:
            bufs["monitor"] = self.buffer(kind="single", extra_shape=sample.shape, dtype=sample.dtype,
                                          use="result_only")
        return bufs

    def process_frame(self, frame: np.ndarray) -> None:
        self.results.result[:] = np.asarray(self.params.f(frame))

    def get_results(self) -> dict[str, Any]:
        if not self.params.monitor:
            return {}
        merged = self.meta.get_valid_nav_mask()
        done = np.flatnonzero(merged) if merged is not None else np.arange(len(self.results.result))
        last = int(done[-1]) if len(done) else 0
        return {"monitor": np.array(self.results.result[last]).reshape(self.results.result.shape[1:] or (1,))}
