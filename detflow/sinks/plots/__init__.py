"""Live plots of a run's results, and the Panel dashboard that serves them.

``ctx.run_udf(..., plots=True)`` and ``graph.run(sinks=[LivePlotSink(...)])`` show
live images (HoloViews, bokeh backend; :class:`NullPlot` for headless runs);
``detflow serve GRAPH.yaml`` and :meth:`detflow.Graph.serve` start the dashboard.
HoloViews and Panel are imported only when a plot or the dashboard is made.
"""

from __future__ import annotations

from typing import Any

from detflow.sinks.plots.base import Channel, LivePlot, NullPlot, Throttle, plot_array
from detflow.sinks.plots.sink import LivePlotSink, select_channels

__all__ = [
    "Channel",
    "Dashboard",
    "HoloViewsPlot",
    "LivePlot",
    "LivePlotSink",
    "NullPlot",
    "Throttle",
    "plot_array",
    "select_channels",
    "serve",
]

_LAZY = {
    "HoloViewsPlot": "detflow.sinks.plots.holoviews_",
    "Dashboard": "detflow.sinks.plots.dashboard",
    "serve": "detflow.sinks.plots.dashboard",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
