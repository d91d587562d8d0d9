"""What a sink is: a subscriber to a run's merged updates."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from detflow.graph.events import RunInfo, Update
    from detflow.graph.results import UDFResults

__all__ = ["Sink"]


@runtime_checkable
class Sink(Protocol):
    """Receives ``start`` once, ``update`` per merged partition, ``finish`` once.

    ``finish`` gets the final results, or ``None`` when the run failed or was stopped;
    either way it must leave whatever it wrote consistent.
    """

    def start(self, info: RunInfo) -> None: ...

    def update(self, update: Update) -> None: ...

    def finish(self, results: UDFResults | None) -> None: ...
