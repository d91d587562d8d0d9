"""What every live plot shares: channels, the throttle, and the array a plot shows.

A *channel* is one image: a result buffer of one UDF node, optionally passed through
a transform (``("field", np.abs)``). A *plot class* turns a channel into something a
person looks at; it is handed a ready 2-D float array and nothing else, so the
policy lives here and in :mod:`detflow.sinks.plots.sink`, once, for every plot class:

* pixels not computed yet (nav positions no partition has covered, positions outside
  the ROI) are NaN, never zeros; integer and boolean results become floats;
* updates reach the plots at most ``max_rate`` times per second, measured on the
  driver by a :class:`Throttle` whose clock can be replaced in tests.

:class:`NullPlot` keeps the last array and counts updates: it stands in for a real
plot in headless runs and in tests (``Context(plot_class=NullPlot)``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from detflow.errors import ConfigurationError

if TYPE_CHECKING:
    from detflow.graph.events import RunInfo
    from detflow.graph.results import ResultBuffer

__all__ = ["Channel", "LivePlot", "NullPlot", "Throttle", "plot_array"]


@dataclass(frozen=True)
class Channel:
    """One image of a run: buffer ``buffer`` of the ``index``-th UDF node, transformed.

    ``kind`` is the buffer kind (``nav``, ``sig`` or ``single``), which decides the
    axes: nav results are drawn in scan coordinates (``nav_y``, ``nav_x``), sig
    results in detector coordinates (``sig_y``, ``sig_x``).
    """

    index: int
    node_id: str
    buffer: str
    kind: str
    transform: Callable[[np.ndarray], Any] | None = field(default=None, compare=False)
    udf_type: str = ""
    #: a title that replaces ``node: buffer`` (the dashboard's "latest frame")
    label: str = ""

    @property
    def key(self) -> str:
        """A name unique within a run: ``node/buffer`` (``node/buffer:fn`` if transformed)."""
        suffix = f":{_fn_name(self.transform)}" if self.transform is not None else ""
        return f"{self.node_id}/{self.buffer}{suffix}"

    @property
    def title(self) -> str:
        if self.label:
            return self.label
        name = self.buffer if self.transform is None else f"{_fn_name(self.transform)}({self.buffer})"
        return f"{self.node_id}: {name}"

    @property
    def units(self) -> str:
        """The unit of the values shown, where the buffer says it (``""`` where unknown)."""
        if self.transform is not None:
            return ""
        return _UNITS.get((self.udf_type, self.buffer), _UNITS.get(("", self.buffer), ""))

    @property
    def value_label(self) -> str:
        """The colour bar's label: the buffer's name and, where known, its unit."""
        name = self.buffer if self.transform is None else f"{_fn_name(self.transform)}({self.buffer})"
        return f"{name} [{self.units}]" if self.units else name

    @property
    def dims(self) -> tuple[str, str]:
        """Names of the (y, x) axes."""
        if self.kind in ("nav", "sig"):
            return (f"{self.kind}_y", f"{self.kind}_x")
        return (f"{self.buffer}_0", f"{self.buffer}_1")


#: units of the built-in UDFs' buffers, by (UDF type, buffer); ("", buffer) for any type
_UNITS: dict[tuple[str, str], str] = {
    ("", "intensity"): "counts",
    ("stddev", "sum"): "counts", ("stddev", "mean"): "counts", ("stddev", "std"): "counts",
    ("stddev", "var"): "counts²", ("stddev", "varsum"): "counts²",
    ("logsum", "logsum"): "log counts",
    **{("com", name): "px" for name in ("raw_com", "raw_shifts", "field", "magnitude", "x", "y", "field_x",
                                         "field_y", "shift_x", "shift_y")},
    ("com", "divergence"): "px/position", ("com", "curl"): "px/position",
}


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


class Throttle:
    """Lets at most ``max_rate`` events per second through (``None``: all of them).

    The interval is counted from the end of the last event let through (:meth:`done`),
    so a slow plot update cannot take more than its share of the driver's time.

    Examples
    --------
    >>> now = [0.0]
    >>> t = Throttle(4.0, clock=lambda: now[0])
    >>> t.ready(); t.done()
    True
    >>> now[0] = 0.1; t.ready()
    False
    >>> now[0] = 0.25; t.ready()
    True
    """

    def __init__(self, max_rate: float | None = 4.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_rate is not None and not (max_rate > 0 and math.isfinite(max_rate)):
            raise ConfigurationError(f"plots: max_rate must be a positive number of updates per second "
                                     f"(or None for every partition); got {max_rate!r}")
        self.interval = 0.0 if max_rate is None else 1.0 / max_rate
        self.clock = clock
        self._last = -math.inf

    def ready(self) -> bool:
        """May an event go through now?"""
        return self.clock() - self._last >= self.interval

    def done(self) -> None:
        """An event went through; the next one waits a full interval from now."""
        self._last = self.clock()


def plot_array(buf: ResultBuffer, transform: Callable[[np.ndarray], Any] | None = None) -> np.ndarray:
    """The floating-point array a plot shows: ``buf.data`` with NaN where nothing is computed.

    Nav results are NaN at positions no merged partition has covered yet and outside
    the ROI; integer and boolean results become floating point (so NaN can be shown),
    complex results their magnitude. ``transform`` is applied last.
    """
    data = np.asarray(buf.data)
    if data.dtype.kind == "c":
        data = np.abs(data)
    if data.dtype.kind == "f":
        ftype = data.dtype
    else:  # float32 holds every value of 8- and 16-bit integers exactly; wider ones need float64
        ftype = np.dtype(np.float32) if data.dtype.itemsize <= 2 else np.dtype(np.float64)
    out = np.array(data, dtype=ftype, copy=True)
    if buf.kind == "nav":
        missing = ~buf.valid_mask
        if missing.any():
            out[missing] = np.nan  # broadcasts over any extra dims
    if transform is not None:
        out = np.asarray(transform(out))
    return out


class LivePlot:
    """The interface of a plot class: one image, fed whole 2-D arrays.

    A plot class is called as ``plot_class(channel, info)`` when a run starts
    (``info`` is the :class:`~detflow.graph.stream.RunInfo`), then gets
    :meth:`new_data` for each update the throttle lets through, the last one with
    ``final=True`` when the run completed. :meth:`display` shows it in a notebook.
    """

    def __init__(self, channel: Channel, info: RunInfo | None = None) -> None:
        self.channel = channel
        self.info = info
        #: the array shown now (``None`` before the first update)
        self.data: np.ndarray | None = None
        #: frames merged into ``data``
        self.frames_done = 0
        #: updates received so far
        self.updates = 0
        #: True once the final result of a completed run is shown
        self.final = False

    @property
    def title(self) -> str:
        return self.channel.title

    def new_data(self, data: np.ndarray, *, frames_done: int, final: bool = False) -> None:
        self.data = data
        self.frames_done = frames_done
        self.updates += 1
        self.final = final

    def display(self) -> None:
        """Show the plot (in a notebook); the base class has nothing to show."""

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.channel.title!r}: {self.updates} updates, "
                f"{self.frames_done} frames{', final' if self.final else ''}>")


class NullPlot(LivePlot):
    """A plot that draws nothing: keeps the last array and every update's frame count.

    Examples
    --------
    >>> import numpy as np
    >>> import detflow as df
    >>> from detflow.nodes import SumSigUDF
    >>> ctx = df.Context.make_with("inline", plot_class=NullPlot)
    >>> ds = ctx.load("memory", data=np.ones((2, 3, 4, 4)), num_partitions=2)
    >>> _ = ctx.run_udf(dataset=ds, udf=SumSigUDF(), plots=True)
    >>> [p.title for p in ctx.plots], ctx.plots[0].data.tolist()
    (['sumsig: intensity'], [[16.0, 16.0, 16.0], [16.0, 16.0, 16.0]])
    """

    def __init__(self, channel: Channel, info: RunInfo | None = None) -> None:
        super().__init__(channel, info)
        #: ``frames_done`` of every update, in order
        self.history: list[int] = []

    def new_data(self, data: np.ndarray, *, frames_done: int, final: bool = False) -> None:
        super().new_data(data, frames_done=frames_done, final=final)
        self.history.append(frames_done)
