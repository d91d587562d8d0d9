"""The events of a run, as sinks see them: what started, and each merged partition.

These types live below the sinks and below the module that drives a run, so a sink
needs nothing but this module to understand what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from detflow.graph.results import UDFResults
    from detflow.nodes.base import UDF
    from detflow.nodes.runner import PartialResult
    from detflow.sources.base import DatasetMeta, Source

__all__ = ["PassView", "RunInfo", "Subscriber", "Update"]


@dataclass(frozen=True)
class RunInfo:
    """What subscribers learn when a pass of a run starts.

    ``node_ids`` are every node with results in the run (UDF nodes, then result
    nodes), in the order of ``Update.results.buffers``; ``meta`` is the dataset the
    pass reads; ``pass_index`` / ``passes_total`` say which pass of the graph it is.
    """

    graph_name: str
    node_ids: tuple[str, ...]
    meta: DatasetMeta
    roi: np.ndarray | None
    frames_total: int
    partitions_total: int
    pass_index: int = 0
    passes_total: int = 1


@dataclass(frozen=True)
class Update:
    """One merged partition, as subscribers see it."""

    partial: PartialResult
    frames_done: int
    partitions_done: int
    info: RunInfo
    results: UDFResults


@runtime_checkable
class Subscriber(Protocol):
    """Receives ``start`` once, ``update`` per merged partition, ``finish`` once."""

    def start(self, info: RunInfo) -> None: ...

    def update(self, update: Update) -> None: ...

    def finish(self, results: UDFResults | None) -> None: ...


class PassView(Protocol):
    """What a sink is told of the pass it subscribes to, when it is made from a graph's sink node
    (``from_node(..., plan=...)``): the graph's name, the source and partition node it reads,
    and the UDF and result nodes whose results it will see."""

    name: str
    source: Source
    partition_id: str
    udfs: list[tuple[str, UDF]]
    results: list[tuple[str, Any, tuple[str, ...]]]

    @property
    def meta(self) -> DatasetMeta: ...
