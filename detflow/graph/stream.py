"""detflow's wrapper around a streamz pipeline: partial results → merge → subscribers.

streamz carries each partition's partial result through the merge step and on to
every subscriber (progress bars, writers, plots). Its quirks stay in here:

* a branch with no sink is garbage-collected, so this object holds every sink node;
* streamz has no end-of-stream signal, so ``start``/``finish`` are called on the
  subscribers directly, around the stream;
* the stream runs synchronously in the driver thread (no event loop), which keeps
  the per-element cost to a function call or two; elements are partitions, not frames.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from detflow.graph.results import UDFResults
    from detflow.nodes.runner import PartialResult
    from detflow.sinks.base import Sink
    from detflow.sources.base import DatasetMeta

__all__ = ["ResultStream", "RunInfo", "Update"]


@dataclass(frozen=True)
class RunInfo:
    """What subscribers learn when a run starts."""

    graph_name: str
    node_ids: tuple[str, ...]
    meta: DatasetMeta
    roi: np.ndarray | None
    frames_total: int
    partitions_total: int


@dataclass(frozen=True)
class Update:
    """One merged partition, as subscribers see it."""

    partial: PartialResult
    frames_done: int
    partitions_done: int
    info: RunInfo
    results: UDFResults


def _import_streamz() -> Any:
    """streamz, imported without the dask.distributed integration detflow does not use.

    streamz's import tries ``distributed`` and its own dask streams, which cost more
    than the rest of a small run's start-up. Both read as absent for that one import
    (the driver makes the stream before any worker runs), unless imported already;
    ``import distributed`` and ``import streamz.dask`` work as usual afterwards.
    """
    if "streamz" in sys.modules:
        return sys.modules["streamz"]
    hidden = [m for m in ("distributed", "streamz.dask") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]
    try:
        return importlib.import_module("streamz")
    finally:
        for m in hidden:
            if m in sys.modules and sys.modules[m] is None:
                del sys.modules[m]


class ResultStream:
    """Partial results in; merged updates out to every subscribed sink."""

    def __init__(self, merge: Callable[[PartialResult], Update]) -> None:
        streamz = _import_streamz()
        self._source = streamz.Stream(stream_name="partials")
        self._merged = self._source.map(merge)
        self._last: list[Update] = []
        self._keep = [self._merged.sink(self._last_update)]
        self._sinks: list[Sink] = []

    def _last_update(self, update: Update) -> None:
        self._last[:] = [update]

    def subscribe(self, sink: Sink) -> None:
        self._sinks.append(sink)
        self._keep.append(self._merged.sink(sink.update))

    def start(self, info: RunInfo) -> None:
        for sink in self._sinks:
            sink.start(info)

    def emit(self, partial: PartialResult) -> Update:
        self._source.emit(partial)
        return self._last[0]

    def finish(self, results: Any) -> None:
        """Tell every sink the run ended (``results`` is ``None`` if it failed)."""
        errors = []
        for sink in self._sinks:
            try:
                sink.finish(results)
            except Exception as err:  # one broken sink must not keep the others open
                errors.append(err)
        for node in self._keep:
            node.destroy()
        if errors:
            raise errors[0]
