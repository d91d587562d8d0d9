"""Result nodes: computations on merged (or partial) results, on the driver.

The contract is :class:`~detflow.nodes.results.base.ResultNode`; built-ins, one module
per family, are registered in :data:`detflow.registry.RESULTS`: ``find_disk``
(:mod:`.find_disk`), ``idpc`` (:mod:`.idpc`) and user functions by import path
(:mod:`.function`).
"""

from __future__ import annotations

from detflow.nodes.results.base import BufferInfo, ResultNode, result_node_class

__all__ = ["BufferInfo", "ResultNode", "result_node_class"]
