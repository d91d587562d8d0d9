"""``inline``: run every item in the calling thread, one after another."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, wait
from typing import Any

from detflow.executors.base import Deadlines, check_partition_timeout

__all__ = ["InlineExecutor"]


class InlineExecutor:
    """Runs items sequentially in the calling thread.

    Parameters
    ----------
    debug
        Round-trip every item and result through cloudpickle, so what would break in a
        separate process (an unpicklable UDF, a partition that carries an open file)
        breaks here too. The test suite runs with ``debug=True``.
    partition_timeout
        Seconds one item may run; past that the map raises
        :class:`~detflow.errors.PartitionTimeoutError` naming the partition. Python
        cannot stop a thread, nor interrupt a C loop from a signal handler, so with a
        timeout each item runs in a helper thread while the calling thread waits: an
        item that times out is *abandoned*, not stopped. Its thread (a daemon thread,
        which cannot keep the process from exiting) runs on until the item returns,
        holding what it holds; the next item gets a fresh thread. Without a timeout
        items run in the calling thread itself, as the name says.

    Examples
    --------
    >>> list(InlineExecutor(debug=True).map_unordered(len, ["ab", "c"]))
    [2, 1]
    """

    n_workers = 1
    remote = False

    def __init__(self, *, debug: bool = False, partition_timeout: float | None = None) -> None:
        self.debug = debug
        self.partition_timeout = check_partition_timeout(partition_timeout, "inline")

    @classmethod
    def make_local(cls, *, cpus: int | None = None, debug: bool = False,
                   partition_timeout: float | None = None) -> InlineExecutor:
        return cls(debug=debug, partition_timeout=partition_timeout)

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        if self.debug:
            import cloudpickle

            fn = cloudpickle.loads(cloudpickle.dumps(fn))
            call = fn

            def fn(item: Any) -> Any:
                result = call(cloudpickle.loads(cloudpickle.dumps(item)))
                return cloudpickle.loads(cloudpickle.dumps(result))

        if self.partition_timeout is None:
            for item in items:
                yield fn(item)
            return
        deadlines = Deadlines(self.partition_timeout)
        for n, item in enumerate(items):
            future: Future[Any] = Future()
            threading.Thread(target=_run, args=(future, fn, item), name=f"detflow-inline-{n}", daemon=True).start()
            deadlines.start(n, item)
            while not future.done():
                wait([future], timeout=deadlines.wait())  # raises past the timeout; Ctrl-C ends it too
            deadlines.finish(n)
            yield future.result()

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"InlineExecutor(debug={self.debug})"


def _run(future: Future[Any], fn: Callable[[Any], Any], item: Any) -> None:
    future.set_running_or_notify_cancel()
    try:
        future.set_result(fn(item))
    except BaseException as err:  # noqa: BLE001 - handed to the calling thread
        future.set_exception(err)
