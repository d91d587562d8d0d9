"""``threads``: a pool of threads in this process.

Fast when the work releases the GIL, which numpy's array operations and detflow's
numba kernels (``nogil=True``) do. At most ``2 * n_workers`` items are in flight, so a
long run does not hold every partition's results in memory at once. While a map runs
on more than one thread, BLAS is held to one thread per call (threadpoolctl), so
``n_workers`` concurrent matrix products do not each start a thread per core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from detflow.executors.base import default_cpus

__all__ = ["ThreadedExecutor"]


class ThreadedExecutor:
    """Runs items on ``cpus`` threads; results come back as they complete.

    Examples
    --------
    >>> ex = ThreadedExecutor.make_local(cpus=2)
    >>> sorted(ex.map_unordered(lambda x: x * x, range(4)))
    [0, 1, 4, 9]
    >>> ex.close()
    """

    remote = False

    def __init__(self, cpus: int | None = None) -> None:
        self.n_workers = cpus or default_cpus()
        self._pool = ThreadPoolExecutor(self.n_workers, thread_name_prefix="detflow")

    @classmethod
    def make_local(cls, *, cpus: int | None = None) -> ThreadedExecutor:
        return cls(cpus)

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
        pending: set[Future[Any]] = set()
        exhausted = False

        def fill() -> None:
            nonlocal exhausted
            while not exhausted and len(pending) < 2 * self.n_workers:
                if ready is not None and pending and not ready():
                    return  # keep collecting results; look again shortly
                nxt = next(it, _END)
                if nxt is _END:
                    exhausted = True
                else:
                    pending.add(self._pool.submit(fn, nxt))

        try:
            fill()
            while pending:
                timeout = LIVE_POLL if ready is not None and not exhausted else None
                done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()  # re-raises the task's exception, traceback intact
                fill()
        finally:
            for future in pending:
                future.cancel()
            wait(pending)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return f"ThreadedExecutor(cpus={self.n_workers})"


_END = object()

#: how often to look for newly arrived live items while tasks run (seconds)
LIVE_POLL = 0.01
