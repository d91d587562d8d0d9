"""``delayed``: a run lowered to one ``dask.delayed`` graph, merged in a task tree.

One task per partition reads its own data (partitions are recipes, not arrays),
and a binary tree of ``combine`` tasks merges the results
(:mod:`detflow.nodes.reduce`), so merging is as parallel as the processing. The
graph runs on any dask scheduler: ``"sync"``, ``"threads"``, ``"processes"``, or a
``distributed.Client``. With a client the run goes through
:class:`~detflow.executors.dask_.DaskExecutor` instead, whose ``as_completed`` results
give progress and partial results partition by partition; with the other schedulers
the result arrives once, at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from detflow.errors import ConfigurationError
from detflow.executors.base import default_cpus

__all__ = ["DelayedExecutor"]


class _Opaque:
    """Hides an item from dask, which would otherwise look inside dataclasses and compute
    any dask collection it finds there (a dask-array source's reader, say)."""

    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


def _call(fn: Callable[[Any], Any], wrapped: _Opaque) -> Any:
    return fn(wrapped.item)

_SCHEDULERS = ("sync", "synchronous", "threads", "processes")


class DelayedExecutor:
    """Build a ``dask.delayed`` graph per run and compute it with ``scheduler``.

    Examples
    --------
    >>> ex = DelayedExecutor(scheduler="sync")
    >>> sorted(ex.map_unordered(abs, [-2, 1]))
    [1, 2]
    """

    def __init__(self, scheduler: Any = "threads", *, cpus: int | None = None) -> None:
        if isinstance(scheduler, str) and scheduler not in _SCHEDULERS:
            raise ConfigurationError(
                f"delayed executor: scheduler must be one of {', '.join(_SCHEDULERS)} or a "
                f"distributed.Client; got {scheduler!r}"
            )
        self.scheduler = scheduler
        self._client_executor = None
        if not isinstance(scheduler, str):
            from detflow.executors.dask_ import DaskExecutor

            self._client_executor = DaskExecutor(scheduler)
        self._cpus = 1 if scheduler in ("sync", "synchronous") else (cpus or default_cpus())

    @classmethod
    def make_local(cls, *, cpus: int | None = None, scheduler: Any = "threads") -> DelayedExecutor:
        return cls(scheduler, cpus=cpus)

    @property
    def n_workers(self) -> int:
        return self._client_executor.n_workers if self._client_executor else self._cpus

    @property
    def remote(self) -> bool:
        return self.scheduler == "processes" or self._client_executor is not None

    def _compute(self, root: Any) -> Any:
        import dask

        kwargs: dict[str, Any] = {"scheduler": self.scheduler}
        if self.scheduler in ("threads", "processes"):
            kwargs["num_workers"] = self._cpus
        return dask.compute(root, **kwargs)[0]

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        if self._client_executor is not None:
            yield from self._client_executor.map_unordered(fn, items)
            return
        from dask import delayed

        yield from self._compute([delayed(_call, pure=False)(fn, _Opaque(item)) for item in items])

    @property
    def reduce_tree(self) -> Callable[..., Any] | None:
        """Run ``fn`` over ``tasks`` and merge in a binary task tree (``None`` with a client,
        where partition-by-partition results are worth more)."""
        return None if self._client_executor is not None else self._reduce_tree

    def _reduce_tree(self, fn: Callable[[Any], Any], tasks: list[Any], ctx: Any) -> Any:
        from dask import delayed

        from detflow.nodes.reduce import combine, finish, to_group

        level = [delayed(to_group, pure=False)(delayed(_call, pure=False)(fn, _Opaque(t)), ctx) for t in tasks]
        while len(level) > 1:
            paired = [delayed(combine, pure=False)(a, b, ctx) for a, b in zip(level[::2], level[1::2], strict=False)]
            level = paired + ([level[-1]] if len(level) % 2 else [])
        return self._compute(delayed(finish, pure=False)(level[0], ctx))

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"DelayedExecutor(scheduler={self.scheduler!r})"
