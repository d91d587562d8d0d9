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

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from detflow.graph.events import RunInfo, Subscriber, Update

if TYPE_CHECKING:
    from detflow.nodes.runner import PartialResult

__all__ = ["ResultStream", "RunInfo", "Update"]


class ResultStream:
    """Partial results in; merged updates out to every subscribed sink."""

    def __init__(self, merge: Callable[[PartialResult], Update]) -> None:
        import streamz

        self._source = streamz.Stream(stream_name="partials")
        self._merged = self._source.map(merge)
        self._last: list[Update] = []
        self._keep = [self._merged.sink(self._last_update)]
        self._sinks: list[Subscriber] = []

    def _last_update(self, update: Update) -> None:
        self._last[:] = [update]

    def subscribe(self, sink: Subscriber) -> None:
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
