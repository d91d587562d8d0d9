"""``delayed``: a run lowered to a ``dask.delayed`` graph, one task per partition.

One task per partition reads its own data (partitions are recipes, not arrays). The
graph runs on any dask scheduler: ``"sync"``, ``"threads"``, ``"processes"``, or a
``distributed.Client``. With a client the run goes through
:class:`~detflow.executors.dask_.DaskExecutor` instead, whose ``as_completed`` results
give progress and partial results partition by partition.

On the local schedulers the graph is computed in a background thread, and a dask
callback hands each partition's result to the driver as it completes, so progress,
partial results and sinks stream as with any executor. Each partition task feeds one
small task that drops its result, so no result is held after the driver took it; the
callback waits while ``2 * n_workers`` results wait for the driver (back-pressure: the
scheduler submits nothing new meanwhile). The driver thread only waits on that hand-off,
a short wait at a time, so Ctrl-C and ``partition_timeout`` end a run whose task hangs:
its threads are abandoned (daemon threads: they cannot keep the process alive) and
the processes scheduler's worker processes are killed.

``merge="tree"`` instead merges in a binary tree of ``combine`` tasks
(:mod:`detflow.nodes.reduce`, as :func:`~detflow.graph.delayed_.graph_to_delayed`
does): merging is then as parallel as the processing, and the result arrives once, at
the end.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from detflow.errors import ConfigurationError
from detflow.executors.base import Deadlines, check_partition_timeout, default_cpus

__all__ = ["DelayedExecutor"]


class _Opaque:
    """Hides an item from dask, which would otherwise look inside dataclasses and compute
    any dask collection it finds there (a dask-array source's reader, say)."""

    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


def _call(fn: Callable[[Any], Any], wrapped: _Opaque) -> Any:
    return fn(wrapped.item)


def _drop(result: Any) -> None:
    """The one dependent of a partition task: its result is released once this ran."""


def _done(*_: None) -> None:
    pass


def _warm() -> None:
    import detflow.nodes.runner  # noqa: F401 - what every partition task needs first


_SCHEDULERS = ("sync", "synchronous", "threads", "processes")
_MERGES = ("driver", "tree")


class DelayedExecutor:
    """Build a ``dask.delayed`` graph per run and compute it with ``scheduler``.

    Parameters
    ----------
    scheduler
        ``"sync"``, ``"threads"``, ``"processes"`` or a ``distributed.Client``.
    cpus
        Threads or processes of a local scheduler (default: the CPUs this process may use).
    partition_timeout
        Seconds one partition may run; past that the run stops with a
        :class:`~detflow.errors.PartitionTimeoutError` naming it. The clock starts when
        dask hands the task to its threads or processes (it keeps at most ``cpus``
        there); the processes are started (and import detflow) before the clock runs.
    merge
        ``"driver"`` (partial results stream) or ``"tree"`` (see the module docstring).

    Examples
    --------
    >>> ex = DelayedExecutor(scheduler="sync")
    >>> sorted(ex.map_unordered(abs, [-2, 1]))
    [1, 2]
    """

    def __init__(self, scheduler: Any = "threads", *, cpus: int | None = None,
                 partition_timeout: float | None = None, merge: str = "driver") -> None:
        if isinstance(scheduler, str) and scheduler not in _SCHEDULERS:
            raise ConfigurationError(
                f"delayed executor: scheduler must be one of {', '.join(_SCHEDULERS)} or a "
                f"distributed.Client; got {scheduler!r}"
            )
        if merge not in _MERGES:
            raise ConfigurationError(f"delayed executor: merge must be one of {', '.join(_MERGES)}; got {merge!r}")
        self.scheduler = scheduler
        self.merge = merge
        self.partition_timeout = check_partition_timeout(partition_timeout, "delayed")
        self._client_executor = None
        if not isinstance(scheduler, str):
            from detflow.executors.dask_ import DaskExecutor

            self._client_executor = DaskExecutor(scheduler, partition_timeout=partition_timeout)
        self._cpus = 1 if scheduler in ("sync", "synchronous") else (cpus or default_cpus())

    @classmethod
    def make_local(cls, *, cpus: int | None = None, scheduler: Any = "threads",
                   partition_timeout: float | None = None, merge: str = "driver") -> DelayedExecutor:
        return cls(scheduler, cpus=cpus, partition_timeout=partition_timeout, merge=merge)

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
        yield from _Streamed(self, fn, list(items)).results()

    @property
    def reduce_tree(self) -> Callable[..., Any] | None:
        """With ``merge="tree"`` on a local scheduler: run ``fn`` over ``tasks`` and merge in a
        binary task tree; else ``None`` (results stream partition by partition)."""
        return self._reduce_tree if self._client_executor is None and self.merge == "tree" else None

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
        return f"DelayedExecutor(scheduler={self.scheduler!r}, merge={self.merge!r})"


class _Abandoned(Exception):
    """Raised in the compute thread when the driver stopped taking results."""


class _Streamed:
    """One map on a local scheduler: the compute thread and the driver's end of the hand-off."""

    def __init__(self, executor: DelayedExecutor, fn: Callable[[Any], Any], items: list[Any]) -> None:
        self.ex, self.fn, self.items = executor, fn, items
        self.token = f"detflow-part-{next(_maps)}-"
        # (n, result) | (None, exception) | None (the end); bounded: the compute thread waits
        self.queue: queue.Queue[tuple[int | None, Any] | None] = queue.Queue(maxsize=2 * executor.n_workers)
        self.stopped = threading.Event()
        self.started: queue.SimpleQueue[int] = queue.SimpleQueue()  # n of each task handed to the pool
        self.pool: Any = None

    def _number(self, key: Any) -> int | None:
        name = key[0] if isinstance(key, tuple) else key
        if isinstance(name, str) and name.startswith(self.token):
            return int(name[len(self.token):])
        return None

    def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
        n = self._number(key)
        if n is not None:
            self.started.put(n)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        n = self._number(key)
        if n is None:
            return
        while True:  # back-pressure: the scheduler loop (this thread) waits for the driver
            if self.stopped.is_set():
                raise _Abandoned
            try:
                self.queue.put((n, result), timeout=0.2)
                return
            except queue.Full:
                continue

    def _compute(self) -> None:
        import dask
        from dask import delayed

        try:
            parts = [delayed(_call, pure=False)(self.fn, _Opaque(item), dask_key_name=f"{self.token}{n}")
                     for n, item in enumerate(self.items)]
            root = delayed(_done, pure=False)(*[delayed(_drop, pure=False)(p) for p in parts])
            # (start, start_state, pretask, posttask, finish): dask's callback tuple, for this compute only
            kwargs: dict[str, Any] = {"scheduler": self.ex.scheduler,
                                      "callbacks": [(None, None, self._pretask, self._posttask, None)]}
            if self.ex.scheduler == "threads":
                from detflow.executors.threads import _DaemonPool

                self.pool = _DaemonPool(self.ex.n_workers)
                kwargs["pool"] = self.pool
            elif self.ex.scheduler == "processes":
                from concurrent.futures import ProcessPoolExecutor

                from dask.multiprocessing import get_context, initialize_worker_process

                self.pool = ProcessPoolExecutor(self.ex.n_workers, mp_context=get_context(),
                                                initializer=initialize_worker_process)
                kwargs["pool"] = self.pool
                # one task per hand-off (dask batches 6 by default): a batch reports its results only
                # when all of it ran, and its tasks' clocks would all start with the first
                kwargs["chunksize"] = 1
                # start every worker process (one per submit while none is idle) and import detflow
                # there, so partition_timeout's clock does not count a worker's start-up
                for warm in [self.pool.submit(_warm) for _ in range(self.ex.n_workers)]:
                    warm.result()
            dask.compute(root, **kwargs)
        except _Abandoned:
            return
        except BaseException as err:  # noqa: BLE001 - handed to the driver, which abandons the pool
            self._hand(None, err)
        else:
            self._close_pool()
            self._hand_end()

    def _close_pool(self) -> None:
        if self.pool is not None and not self.stopped.is_set():
            self.pool.shutdown(wait=True)  # every task is done: returns at once

    def _hand(self, n: int | None, value: Any) -> None:
        while not self.stopped.is_set():
            try:
                self.queue.put((n, value), timeout=0.2)
                return
            except queue.Full:
                continue

    def _hand_end(self) -> None:
        while not self.stopped.is_set():
            try:
                self.queue.put(None, timeout=0.2)
                return
            except queue.Full:
                continue

    def results(self) -> Iterator[Any]:
        if not self.items:
            return
        deadlines = Deadlines(self.ex.partition_timeout)
        thread = threading.Thread(target=self._compute, name="detflow-delayed", daemon=True)
        thread.start()
        finished = False
        returned: set[int] = set()
        try:
            while True:
                while True:
                    try:
                        began = self.started.get_nowait()
                    except queue.Empty:
                        break
                    if began not in returned:  # its result can be in before the driver saw it start
                        deadlines.start(began, self.items[began])
                try:
                    got = self.queue.get(timeout=deadlines.wait())  # Ctrl-C and the timeout end the wait
                except queue.Empty:
                    continue
                if got is None:
                    finished = True
                    return
                index, value = got
                if index is None:
                    raise value  # other tasks may still run (or hang): abandoned below
                deadlines.finish(index)
                returned.add(index)
                yield value
        finally:
            self.stopped.set()
            if finished:
                thread.join()
            else:
                self._abandon()

    def _abandon(self) -> None:
        """The driver stopped early: nothing of this map may keep running or keep the process alive."""
        pool = self.pool
        if pool is None:
            return  # "sync": the compute thread is the worker; a daemon thread, left to finish on its own
        if self.ex.scheduler == "processes":
            for proc in list(getattr(pool, "_processes", {}).values()):  # no public kill in Python < 3.14
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)
        else:
            pool.shutdown(wait=False)  # daemon threads; a hung one hangs on its own


_maps = itertools.count()
