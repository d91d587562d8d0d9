"""``threads``: a pool of threads in this process.

Fast when the work releases the GIL, which numpy's array operations and detflow's
numba kernels (``nogil=True``) do. At most ``2 * n_workers`` items are in flight, so a
long run does not hold every partition's results in memory at once. While a map runs
on more than one thread, BLAS is held to one thread per call (threadpoolctl), so
``n_workers`` concurrent matrix products do not each start a thread per core.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from detflow.executors.base import check_partition_timeout, default_cpus, describe_item, timed_out

__all__ = ["ThreadedExecutor"]


class ThreadedExecutor:
    """Runs items on ``cpus`` threads; results come back as they complete.

    Parameters
    ----------
    cpus
        Threads (default: the CPUs this process may use).
    partition_timeout
        Seconds one item may run; past that the map raises
        :class:`~detflow.errors.PartitionTimeoutError` naming the partition.

    The threads are daemon threads of detflow's own small pool: a map that is
    abandoned (Ctrl-C, a timeout, an error) returns at once without waiting for items
    still running, and a UDF that hangs forever cannot keep the process from exiting;
    the executor carries on with fresh threads.

    Examples
    --------
    >>> ex = ThreadedExecutor.make_local(cpus=2)
    >>> sorted(ex.map_unordered(lambda x: x * x, range(4)))
    [0, 1, 4, 9]
    >>> ex.close()
    """

    remote = False

    def __init__(self, cpus: int | None = None, *, partition_timeout: float | None = None) -> None:
        self.n_workers = cpus or default_cpus()
        self.partition_timeout = check_partition_timeout(partition_timeout, "threads")
        self._pool = _DaemonPool(self.n_workers)

    @classmethod
    def make_local(cls, *, cpus: int | None = None, partition_timeout: float | None = None) -> ThreadedExecutor:
        return cls(cpus, partition_timeout=partition_timeout)

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        limits = None
        if self.n_workers > 1:
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(limits=1, user_api="blas")
        try:
            yield from self._map(fn, items)
        finally:
            if limits is not None:
                limits.restore_original_limits()

    def _map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        it = iter(items)
        # a live source's items arrive over time; ready() says whether next() would block
        ready: Callable[[], bool] | None = getattr(it, "ready", None)
        pending: dict[Future[Any], tuple[int, Any]] = {}
        started: dict[int, float] = {}  # item number -> when a thread took it up
        counter = itertools.count()
        exhausted = False

        def timed(n: int, item: Any) -> Any:
            started[n] = time.monotonic()
            return fn(item)

        def fill() -> None:
            nonlocal exhausted
            while not exhausted and len(pending) < 2 * self.n_workers:
                if ready is not None and pending and not ready():
                    return  # keep collecting results; look again shortly
                nxt = next(it, _END)
                if nxt is _END:
                    exhausted = True
                else:
                    n = next(counter)
                    pending[self._pool.submit(timed, n, nxt)] = (n, nxt)

        abandoned = False
        try:
            fill()
            while pending:
                timeout = LIVE_POLL if ready is not None and not exhausted else None
                timeout = self._check_timeouts(pending, started, timeout)
                # never an unbounded wait: a SIGINT the kernel hands to a worker thread does not
                # wake this one, so it looks for pending signals (Ctrl-C) at least every SIGNAL_POLL
                timeout = SIGNAL_POLL if timeout is None else min(timeout, SIGNAL_POLL)
                done, _ = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    started.pop(pending.pop(future)[0], None)
                    yield future.result()  # re-raises the task's exception, traceback intact
                fill()
        except GeneratorExit:
            # the consumer stopped (Ctrl-C or an error while it held a result, or a break):
            # a task still running may be hung, so it is not waited for either
            abandoned = True
            raise
        except BaseException:
            abandoned = True  # Ctrl-C, a timeout, a failed item: do not wait for the ones still running
            raise
        finally:
            for future in pending:
                future.cancel()
            if abandoned:
                if any(f.running() for f in pending):
                    self._pool.shutdown(wait=False)  # its busy threads finish (or hang) on their own
                    self._pool = _DaemonPool(self.n_workers)
            else:
                wait(pending)

    def _check_timeouts(self, pending: dict[Future[Any], tuple[int, Any]], started: dict[int, float],
                        timeout: float | None) -> float | None:
        """Raise for an item past ``partition_timeout``; else how long to wait at most."""
        limit = self.partition_timeout
        if limit is None:
            return timeout
        now = time.monotonic()
        running = [(started[n], n, item) for n, item in pending.values() if n in started]
        if not running:
            return limit if timeout is None else min(timeout, limit)
        since, n, item = min(running, key=lambda r: r[0])
        left = since + limit - now
        if left <= 0:
            raise timed_out(describe_item(item, n), limit)
        return left if timeout is None else min(timeout, left)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"ThreadedExecutor(cpus={self.n_workers})"


class _DaemonPool:
    """A fixed set of daemon threads taking ``(future, fn, args)`` from one queue."""

    def __init__(self, n: int) -> None:
        self._max_workers = n  # what dask's threaded scheduler reads of a pool it is given
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue())
        self._threads = [threading.Thread(target=self._work, name=f"detflow-{i}", daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((future, fn, args))
        return future

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
                future.set_exception(err)
            else:
                future.set_result(result)

    def shutdown(self, *, wait: bool) -> None:
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for t in self._threads:
                t.join()


_END = object()
#: how often to look for newly arrived live items while tasks run (seconds)
#: seconds between looks for Ctrl-C while every thread is busy
SIGNAL_POLL = 0.5
LIVE_POLL = 0.01
