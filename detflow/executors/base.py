"""What an executor is: something that runs a picklable function over items.

An executor hands results back *as they complete*, in any order; that is all the
lowering needs (see :mod:`detflow.graph.lowering`). Executors never know about
graphs or UDFs, and nodes never import executors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from detflow.errors import ConfigurationError

__all__ = ["Executor", "default_cpus", "make_executor"]


@runtime_checkable
class Executor(Protocol):
    """Runs ``fn`` over ``items``; results come back as they complete."""

    #: how many items it works on at once (used to size partitions)
    n_workers: int
    #: True when items run in another process (errors then carry the worker traceback)
    remote: bool

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]: ...

    def close(self) -> None: ...


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
    if cpus is not None:
        if not isinstance(cpus, int) or cpus < 1:
            raise ConfigurationError(f"executor {spec!r}: cpus must be an integer >= 1; got {cpus!r}")
        kw["cpus"] = cpus
    return cls.make_local(**kw)
