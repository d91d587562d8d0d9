"""What an executor is: something that runs a picklable function over items.

An executor hands results back *as they complete*, in any order; that is all the
lowering needs (see :mod:`detflow.graph.lowering`). Executors never know about
graphs or UDFs, and nodes never import executors.
"""

from __future__ import annotations

import inspect
import os
import reprlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from detflow.errors import ConfigurationError, PartitionTimeoutError

__all__ = ["SIGNAL_POLL", "Deadlines", "Executor", "check_partition_timeout", "default_cpus", "describe_item",
           "describe_nodes", "make_executor", "timed_out"]

#: seconds between looks for Ctrl-C while a driver waits on work that runs elsewhere: a SIGINT
#: the kernel hands to another thread does not wake a waiting one, so waits are never unbounded
SIGNAL_POLL = 0.5


@runtime_checkable
class Executor(Protocol):
    """Runs ``fn`` over ``items``; results come back as they complete."""

    #: how many items it works on at once (used to size partitions)
    n_workers: int
    #: True when items run in another process (errors then carry the worker traceback)
    remote: bool

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]: ...

    def close(self) -> None: ...


def describe_item(item: Any, n: int) -> str:
    """``partition 3 (frames 300:400)`` for a partition task, else ``item n (...)``."""
    part = getattr(item, "partition", None)
    frames = getattr(part, "frames", None)
    if isinstance(frames, slice):
        return f"partition {getattr(part, 'index', n)} (frames {frames.start}:{frames.stop})"
    return f"item {n} ({reprlib.repr(item)})"


def describe_nodes(item: Any) -> str:
    """``nodes 'sum', 'com'`` for a partition task (its UDF nodes), else ``""``."""
    ids = [getattr(spec, "node_id", None) for spec in getattr(item, "udfs", ())]
    ids = [i for i in ids if i is not None]
    if not ids:
        return ""
    return ("node " if len(ids) == 1 else "nodes ") + ", ".join(repr(i) for i in ids)


class Deadlines:
    """When each running item started, against ``partition_timeout``.

    ``start(n, item)`` when item ``n`` starts, ``finish(n)`` when its result is back;
    ``wait(cap)`` is how long the driver may wait for the next result (at most ``cap``
    and :data:`SIGNAL_POLL`), and raises :func:`timed_out` for an item past the limit.
    """

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self._started: dict[int, tuple[float, Any]] = {}

    def start(self, n: int, item: Any) -> None:
        self._started[n] = (time.monotonic(), item)

    def finish(self, n: int) -> None:
        self._started.pop(n, None)

    @property
    def running(self) -> int:
        return len(self._started)

    def wait(self, cap: float | None = None) -> float:
        wait = SIGNAL_POLL if cap is None else min(cap, SIGNAL_POLL)
        if self.limit is None or not self._started:
            return wait
        n, (since, item) = min(list(self._started.items()), key=lambda kv: kv[1][0])
        left = since + self.limit - time.monotonic()
        if left <= 0:
            raise timed_out(describe_item(item, n), self.limit)
        return min(wait, left)


def check_partition_timeout(value: float | None, executor: str) -> float | None:
    """``value`` as seconds (``None``: no limit); an error unless it is > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{executor} executor: partition_timeout must be > 0 seconds; got {value!r}")
    return float(value)


def timed_out(desc: str, timeout: float) -> PartitionTimeoutError:
    """The error for a partition that ran past ``partition_timeout``."""
    return PartitionTimeoutError(
        f"{desc} ran longer than partition_timeout={timeout:g} s; the run was stopped (a hung UDF, a "
        "stalled file system?). Raise partition_timeout (--partition-timeout) if it is just slow"
    )


def default_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def make_executor(spec: str | Executor = "threads", *, cpus: int | None = None, **kw: Any) -> Executor:
    """An executor from a registry name (``"inline"``, ``"threads"``, ...) or pass one through.

    Examples
    --------
    >>> ex = make_executor("threads", cpus=2)
    >>> sorted(ex.map_unordered(abs, [-1, -2]))
    [1, 2]
    >>> ex.close()
    """
    if not isinstance(spec, str):
        return spec
    from detflow.registry import EXECUTORS

    aliases = {"synchronous": "inline", "concurrent": "threads", "threaded": "threads"}
    cls = EXECUTORS.get(aliases.get(spec, spec))
    timeout = kw.pop("partition_timeout", None)
    if timeout is not None:
        accepted = {*inspect.signature(cls.make_local).parameters, *inspect.signature(cls).parameters}
        if "partition_timeout" not in accepted:  # a third-party executor
            raise ConfigurationError(f"executor {spec!r}: partition_timeout is not supported by {cls.__name__}")
        kw["partition_timeout"] = timeout
    if cpus is not None:
        if not isinstance(cpus, int) or cpus < 1:
            raise ConfigurationError(f"executor {spec!r}: cpus must be an integer >= 1; got {cpus!r}")
        kw["cpus"] = cpus
    return cls.make_local(**kw)
