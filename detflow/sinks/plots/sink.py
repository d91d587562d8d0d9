"""``LivePlotSink``: the plots of a run, fed from the driver, throttled.

Which images (channels) a run shows:

* ``plots=True``: every result buffer that is a 2-D image, i.e. a nav result of a
  2-D scan or a sig result of a 2-D detector, without extra dimensions;
* ``plots=[["intensity"], [("field_x", np.abs), "magnitude"]]``: one list per UDF, in
  the order of the UDFs, of buffer names or ``(name, transform)`` pairs; a transform
  takes the buffer's array (NaN where nothing is computed yet) and returns a 2-D array.

The policy, per run:

1. ``start``: the channels are chosen from the UDFs' declared buffers when the sink
   was given the UDFs (so a wrong name fails before any data is read), otherwise from
   the first results; a plot object is made per channel (``plot_class(channel, info)``)
   and, in a Jupyter kernel, displayed;
2. ``update`` (each merged partition): if the :class:`~detflow.sinks.plots.base.Throttle`
   lets it through, the results are computed (``get_results``: the only costly step,
   so it is skipped for updates that are not shown) and every plot gets its array;
3. ``finish``: a completed run's final results go to every plot exactly once, even if
   the throttle would have skipped them (the update of the last partition is left to
   ``finish`` for that reason); a failed or stopped run shows the last state merged.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from detflow.errors import ConfigurationError
from detflow.sinks.plots.base import Channel, LivePlot, Throttle, plot_array

if TYPE_CHECKING:
    from detflow.graph.events import RunInfo, Update
    from detflow.graph.results import UDFResults
    from detflow.nodes.base import UDF
    from detflow.sources.base import DatasetMeta

__all__ = ["LivePlotSink", "declared_buffers", "select_channels"]

log = logging.getLogger("detflow")

#: per UDF: buffer name -> (kind, shape of ``ResultBuffer.data``)
Available = dict[str, tuple[str, tuple[int, ...]]]


def declared_buffers(udf: UDF, meta: DatasetMeta) -> Available:
    """``{name: (kind, shape)}`` of the buffers ``udf`` declares (``udf.meta`` must be set)."""
    out: Available = {}
    for name, decl in udf.get_result_buffers().items():
        if decl.use == "private":
            continue
        if decl.kind == "nav":
            shape = (*meta.nav_shape, *decl.extra_shape)
        elif decl.kind == "sig":
            shape = (*meta.sig_shape, *decl.extra_shape)
        else:
            shape = decl.extra_shape or (1,)
        out[name] = (decl.kind, shape)
    return out


def _computed(results: UDFResults) -> list[Available]:
    out = []
    for buffers in results.buffers:
        avail: Available = {}
        for name, buf in buffers.items():
            if buf.kind == "nav":
                shape = (*buf.nav_shape, *buf.extra_shape)
            elif buf.kind == "sig":
                shape = (*buf.sig_shape, *buf.extra_shape)
            else:
                shape = buf.raw_data.shape
            avail[name] = (buf.kind, shape)
        out.append(avail)
    return out


def _items(plots: Any) -> list[list[tuple[str, Callable[[np.ndarray], Any] | None]]]:
    """Check the form of a ``plots=`` list; ``[[(name, transform or None), ...], ...]``."""
    hint = "expected True or one list per UDF of buffer names or (name, transform) pairs, e.g. [['intensity']]"
    if isinstance(plots, str | bytes) or not isinstance(plots, Sequence):
        raise ConfigurationError(f"plots: {hint}; got {plots!r}")
    out = []
    for per_udf in plots:
        if isinstance(per_udf, str | bytes) or not isinstance(per_udf, Sequence):
            raise ConfigurationError(f"plots: {hint}; got {per_udf!r} where a list was expected")
        chosen: list[tuple[str, Callable[[np.ndarray], Any] | None]] = []
        for item in per_udf:
            if isinstance(item, str):
                chosen.append((item, None))
            elif (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)
                  and callable(item[1])):
                chosen.append((item[0], item[1]))
            else:
                raise ConfigurationError(f"plots: {hint}; got {item!r}")
        out.append(chosen)
    return out


def _is_image(kind: str, shape: tuple[int, ...]) -> bool:
    return kind in ("nav", "sig") and len(shape) == 2


def select_channels(plots: Any, available: Sequence[Available], node_ids: Sequence[str],
                    udf_types: Sequence[str] = ()) -> list[Channel]:
    """The channels ``plots`` asks for, checked against the buffers of each UDF.

    Examples
    --------
    >>> avail = [{"intensity": ("sig", (8, 8)), "count": ("single", (1,))}]
    >>> [c.key for c in select_channels(True, avail, ["sum"])]
    ['sum/intensity']
    >>> select_channels([["counts"]], avail, ["sum"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    detflow.errors.ConfigurationError: plots: node 'sum' (UDF 0) has no result buffer 'counts'; it has: count, ...
    """
    types = list(udf_types) + [""] * (len(node_ids) - len(udf_types))
    channels = []
    if plots is True:
        for i, avail in enumerate(available):
            for name, (kind, shape) in avail.items():
                if _is_image(kind, shape):
                    channels.append(Channel(i, node_ids[i], name, kind, udf_type=types[i]))
        return channels
    chosen = _items(plots)
    if len(chosen) > len(available):
        raise ConfigurationError(
            f"plots: got {len(chosen)} lists for {len(available)} UDF(s); give one list per UDF, in their order")
    for i, per_udf in enumerate(chosen):
        avail = available[i]
        for name, transform in per_udf:
            if name not in avail:
                images = [n for n, (k, s) in avail.items() if _is_image(k, s)]
                raise ConfigurationError(
                    f"plots: node {node_ids[i]!r} (UDF {i}) has no result buffer {name!r}; it has: "
                    f"{', '.join(sorted(avail)) or '(none)'}"
                    + (f" (2-D images: {', '.join(sorted(images))})" if images and len(images) < len(avail) else ""))
            kind, shape = avail[name]
            channel = Channel(i, node_ids[i], name, kind, transform, udf_type=types[i])
            if transform is None and len(shape) != 2:
                raise ConfigurationError(
                    f"plots: buffer {name!r} of node {node_ids[i]!r} has shape {shape}; a plot shows a 2-D "
                    f"array: pass ({name!r}, transform) with a transform that makes one")
            if transform is not None:
                _check_transform(channel, shape)
            channels.append(channel)
    return channels


def _check_transform(channel: Channel, shape: tuple[int, ...]) -> None:
    """Try the transform on an array of ones of the buffer's shape: it must give 2-D."""
    assert channel.transform is not None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            out = np.asarray(channel.transform(np.ones(shape)))
        except Exception as err:
            raise ConfigurationError(
                f"plots: the transform of {channel.title!r} fails on an array of shape {shape}: {err}") from err
    _check_2d(channel, out.shape)


def _check_2d(channel: Channel, shape: tuple[int, ...]) -> None:
    if len(shape) != 2:
        raise ConfigurationError(
            f"plots: {channel.title!r} must be a 2-D array; the transform gives shape {shape}"
            + ("; reduce the last axis, e.g. lambda a: np.hypot(a[..., 0], a[..., 1])" if len(shape) == 3 else ""))


def in_jupyter_kernel() -> bool:
    """True inside a Jupyter kernel (where plots are displayed as the run starts)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


class LivePlotSink:
    """Live images of a run's results, one plot object per channel.

    Parameters
    ----------
    plots
        ``True`` (every 2-D result) or one list per UDF of buffer names or
        ``(name, transform)`` pairs.
    udfs
        The run's UDF instances; with them the channels are checked when the run
        starts, before any data is read (``run_udf`` passes them). Without them the
        channels are chosen from the first results.
    plot_class
        Called as ``plot_class(channel, info)`` for each channel:
        :class:`~detflow.sinks.plots.holoviews_.HoloViewsPlot` (default),
        :class:`~detflow.sinks.plots.base.NullPlot`, or your own
        :class:`~detflow.sinks.plots.base.LivePlot`.
    max_rate
        At most this many updates a second (``None``: every partition). The final
        result is always shown.
    clock
        Seconds, monotonic; tests pass a fake one.
    display
        Display the plots when the run starts; default: only in a Jupyter kernel.

    Examples
    --------
    >>> import numpy as np
    >>> from detflow.graph import Graph
    >>> from detflow.sinks.plots import LivePlotSink, NullPlot
    >>> g = Graph("demo")
    >>> g.source("memory", data=np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4))
    'source'
    >>> g.partition(num_partitions=3)
    'partition'
    >>> g.udf("sumsig", id="total")
    'total'
    >>> sink = LivePlotSink(True, plot_class=NullPlot)
    >>> _ = g.run(executor="inline", sinks=[sink])
    >>> sink.plots[0].title, sink.plots[0].final, float(sink.plots[0].data[1, 2])
    ('total: intensity', True, 1400.0)
    """

    def __init__(
        self,
        plots: Any = True,
        *,
        udfs: Sequence[UDF] | None = None,
        plot_class: Callable[[Channel, RunInfo], LivePlot] | None = None,
        max_rate: float | None = 4.0,
        clock: Callable[[], float] = time.monotonic,
        display: bool | None = None,
    ) -> None:
        if plots is not True:
            _items(plots)  # the form is checked now; the names when the run starts
        self.spec = plots
        self.udfs = None if udfs is None else list(udfs)
        self.plot_class = plot_class
        self.max_rate = max_rate
        self.clock = clock
        self.display = display
        Throttle(max_rate)  # checks max_rate now
        #: the plot objects of the current (or last) run, in channel order
        self.plots: list[LivePlot] = []
        self._info: RunInfo | None = None
        self._last: Update | None = None
        self._last_shown = True
        self._ready = False

    # --- Sink protocol ------------------------------------------------------------
    def start(self, info: RunInfo) -> None:
        self._info = info
        self._throttle = Throttle(self.max_rate, clock=self.clock)
        self._last = None
        self._last_shown = True
        self._ready = False
        self.plots.clear()
        if self.udfs is not None:
            self._make_plots([declared_buffers(udf, info.meta) for udf in self.udfs], info)

    def update(self, update: Update) -> None:
        self._last = update
        self._last_shown = False
        if update.partitions_done >= update.info.partitions_total:
            return  # the last partition: finish shows the final result, once
        if not self._throttle.ready():
            return
        self._show(update.results, update.frames_done, final=False)
        self._last_shown = True
        self._throttle.done()

    def finish(self, results: UDFResults | None) -> None:
        if results is not None:
            self._show(results, results.frames_done, final=True)
        elif self._last is not None and not self._last_shown:
            try:  # a stopped or failed run: show what was merged, if it can still be computed
                self._show(self._last.results, self._last.frames_done, final=False)
            except Exception as err:
                log.warning("live plots: the last partial results could not be shown: %s", err)

    # --- helpers --------------------------------------------------------------------
    def _make_plots(self, available: list[Available], info: RunInfo) -> None:
        types = [type(u).__name__ for u in self.udfs] if self.udfs is not None else []
        channels = select_channels(self.spec, available, info.node_ids, types)
        plot_class = self.plot_class
        if plot_class is None:
            from detflow.sinks.plots.holoviews_ import HoloViewsPlot

            plot_class = HoloViewsPlot
        self.plots[:] = [plot_class(channel, info) for channel in channels]
        self._ready = True
        if not self.plots:
            log.info("live plots: no result of this run is a 2-D image; nothing to plot")
        if self.display or (self.display is None and in_jupyter_kernel()):
            for plot in self.plots:
                plot.display()

    def _show(self, results: UDFResults, frames_done: int, *, final: bool) -> None:
        if not self._ready:
            assert self._info is not None
            self._make_plots(_computed(results), self._info)
        if not self.plots:
            return
        buffers = results.buffers
        for plot in self.plots:
            channel = plot.channel
            data = plot_array(buffers[channel.index][channel.buffer], channel.transform)
            _check_2d(channel, data.shape)
            plot.new_data(data, frames_done=frames_done, final=final)
