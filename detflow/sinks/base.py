"""What a sink is: a subscriber to a run's merged updates."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from detflow.errors import GraphValidationError

if TYPE_CHECKING:
    from detflow.graph.events import RunInfo, Update
    from detflow.graph.results import UDFResults

__all__ = ["Sink", "refuse_overwrite_param"]


@runtime_checkable
class Sink(Protocol):
    """Receives ``start`` once, ``update`` per merged partition, ``finish`` once.

    ``finish`` gets the final results, or ``None`` when the run failed or was stopped;
    either way it must leave whatever it wrote consistent.
    """

    def start(self, info: RunInfo) -> None: ...

    def update(self, update: Update) -> None: ...

    def finish(self, results: UDFResults | None) -> None: ...


def refuse_overwrite_param(sink_id: str, sink_type: str, params: dict[str, Any]) -> None:
    """``overwrite`` in a sink's parameters is an error: replacing outputs is the user's call."""
    if "overwrite" in params:
        raise GraphValidationError(
            "'overwrite' is not a sink parameter: replacing existing outputs needs the user's own flag "
            "(--overwrite on the command line, overwrite=True to run/call), never the graph",
            node=sink_id, node_type=sink_type, parameter="overwrite",
        )
