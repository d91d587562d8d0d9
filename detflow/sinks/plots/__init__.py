"""Live plots of a run's results, as a sink.

``ctx.run_udf(..., plots=True)`` and ``graph.run(sinks=[LivePlotSink(...)])`` show
live images (HoloViews, bokeh backend; :class:`NullPlot` for headless runs). The
dashboard that serves them (``detflow serve GRAPH.yaml``) is an application above
the graph layer: :mod:`detflow.dashboard`. HoloViews is imported only when a plot is made.
"""

from __future__ import annotations

from typing import Any

from detflow.sinks.plots.base import Channel, LivePlot, NullPlot, Throttle, plot_array
from detflow.sinks.plots.sink import LivePlotSink, select_channels

__all__ = [
    "Channel",
    "HoloViewsPlot",
    "LivePlot",
    "LivePlotSink",
    "NullPlot",
    "Throttle",
    "plot_array",
    "select_channels",
]

_LAZY = {
    "HoloViewsPlot": "detflow.sinks.plots.holoviews_",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
