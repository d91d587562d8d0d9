"""Tasks of a live source, made as its partitions arrive (the ``task_feed`` source hook)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from detflow.sources.base import Partition, PartitionPlan


class _Acquisition(Protocol):
    """What the feed needs of a live acquisition (:class:`~detflow.sources.live.base.LiveAcquisition`)."""

    def _ranges(self, plan: PartitionPlan | None) -> list[slice]: ...

    def partitions(self, plan: PartitionPlan | None = None, *, shared: bool = False) -> Any: ...

__all__ = ["LiveTaskFeed"]


class LiveTaskFeed(Iterator[Any]):
    """Tasks of a live source, made as its partitions arrive.

    ``ready()`` tells an executor whether ``next()`` would block, so it can keep
    collecting results while the detector is still sending; ``done(index)`` says a
    partition's result is merged, so its buffer can go; ``error`` is the detector's
    failure, raised by the driver once every frame that arrived is merged.
    """

    def __init__(self, aq: _Acquisition, plan: PartitionPlan | None, make_task: Callable[[Partition], Any], *,
                 keep: Callable[[slice], bool] | None = None, shared: bool = False) -> None:
        self.make_task = make_task
        self.keep = keep or (lambda frames: True)
        self.n_tasks = sum(1 for r in aq._ranges(plan) if self.keep(r))
        self.parts = aq.partitions(plan, shared=shared)

    @property
    def error(self) -> BaseException | None:
        return self.parts.error

    def ready(self) -> bool:
        return self.parts.ready()

    def __next__(self) -> Any:
        while True:
            p = next(self.parts)
            if self.keep(p.frames):
                return self.make_task(p)
            self.parts.release(p.index)

    def done(self, index: int) -> None:
        self.parts.release(index)

    def close(self) -> None:
        self.parts.close()
