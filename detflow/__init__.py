"""detflow: dataflow graphs for pixelated-detector data.

>>> import detflow as df
>>> ctx = df.Context.make_with("inline")   # doctest: +SKIP
"""

from __future__ import annotations

from detflow.api import Context
from detflow.errors import DetflowError
from detflow.graph import Graph
from detflow.live import LiveContext

__version__ = "0.1.0"
__all__ = ["Context", "DetflowError", "Graph", "LiveContext", "__version__"]
