"""The live dashboard: a Panel app that runs a graph and shows its results filling in.

An application above the graph layer (it drives runs; sinks only watch them):
:class:`~detflow.dashboard.controller.RunController` owns the run, one per server;
:func:`serve` starts the server (``detflow serve GRAPH.yaml``). Panel is imported
only when a dashboard is made.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Dashboard", "DashboardServer", "RunController", "serve"]

_LAZY = {
    "Dashboard": "detflow.dashboard.server",
    "DashboardServer": "detflow.dashboard.server",
    "serve": "detflow.dashboard.server",
    "RunController": "detflow.dashboard.controller",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
