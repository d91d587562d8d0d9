"""``dask``: partitions as futures on a ``dask.distributed`` cluster.

``DaskExecutor.make_local()`` starts a local cluster, one single-threaded worker
process per core with BLAS/OpenMP/numba threads pinned to one (each worker is one
core's worth of work); ``DaskExecutor.connect("tcp://host:8786")`` uses a running
scheduler, which is the way past one machine. Partitions of files travel as small
recipes and are read by the worker that runs them. Results come back with
``as_completed``, so progress, partial results and sinks work as with any executor;
at most ``2 * n_workers`` tasks are in flight.

In-memory partitions go to local workers through shared memory (see
:mod:`detflow.shm`) rather than as pickles through the scheduler; to a remote
cluster they are sent with the task.

Lifetime of a staged segment: it lives until no task that reads it can still run.

* A task whose future is done (result back, or its error) is not run again once the
  future is dropped, so the driver drops it, then releases the segment (back to the
  pool, where the next item may reuse it).
* A run that is abandoned (its consumer stopped, or one task failed) does *not* free
  the segments of the tasks still in flight: ``Future.cancel()`` and dropping a future
  both return before a worker that already started (or is about to start) the task has
  stopped, and that task would then read a segment that was unlinked ("is gone") or,
  worse, reused by the next run's item. Those futures are kept, not cancelled, and each
  segment is released by its future's done callback; the cost is finishing at most
  ``in_flight`` tasks per worker. Tasks that carry no segment (file recipes, remote
  clusters) are cancelled at once, as before.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from detflow.errors import ConfigurationError, import_optional
from detflow.executors.base import Deadlines, check_partition_timeout, default_cpus, describe_item, describe_nodes

__all__ = ["DaskExecutor", "worker_env"]


def worker_env() -> dict[str, str]:
    """Environment for worker processes: one thread each for BLAS, OpenMP and numba."""
    return {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                   "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")}


def _distributed() -> Any:
    return import_optional("distributed", "the dask executor")


class DaskExecutor:
    """Runs items as futures of a ``distributed.Client``.

    Parameters
    ----------
    client
        The client; ``make_local`` and ``connect`` make one.
    is_local
        True when the workers share this machine's memory (shared memory can be used).
    cluster
        A cluster this executor started and closes.
    partition_timeout
        Seconds one partition may run on a worker (the clock starts when the worker
        starts the task: it says so with an event); past that the run stops with a
        :class:`~detflow.errors.PartitionTimeoutError` naming it. Python cannot stop the
        worker thread that runs it: on a local cluster this executor started, that
        worker process is restarted; on another cluster it stays busy until the task
        returns.
    """

    remote = True
    #: tasks in flight per worker: enough to hide the scheduler's round trip
    in_flight = 2

    def __init__(self, client: Any, *, is_local: bool = False, cluster: Any = None,
                 partition_timeout: float | None = None) -> None:
        self.client = client
        self.is_local = is_local
        self._cluster = cluster
        self.partition_timeout = check_partition_timeout(partition_timeout, "dask")
        # futures of abandoned runs whose tasks may still read a segment: future -> release
        self._lingering: dict[Any, Callable[[], None]] = {}
        self._lingering_lock = threading.Lock()

    @property
    def shares_memory(self) -> bool:
        """Workers on this machine read the driver's shared-memory segments."""
        return self.is_local and not os.environ.get("DETFLOW_NO_SHM")

    @property
    def n_workers(self) -> int:
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        return max(1, sum(w.get("nthreads", 1) for w in workers.values()))

    @classmethod
    def make_local(cls, *, cpus: int | None = None, address: str | None = None,
                   timeout: float = 60.0, partition_timeout: float | None = None) -> DaskExecutor:
        """A local cluster of ``cpus`` single-threaded worker processes (or ``connect``
        to ``address`` when one is given, as graph files do)."""
        check_partition_timeout(partition_timeout, "dask")
        if address is not None:
            return cls.connect(address, timeout=timeout, partition_timeout=partition_timeout)
        distributed = _distributed()
        n = cpus or default_cpus()
        cluster = distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
            scheduler_kwargs={"dashboard": False},
            host="127.0.0.1", silence_logs=50, env=worker_env(),
        )
        client = distributed.Client(cluster, set_as_default=False, timeout=timeout)
        client.wait_for_workers(n, timeout=timeout)
        return cls(client, is_local=True, cluster=cluster, partition_timeout=partition_timeout)

    @classmethod
    def connect(cls, address: str, *, timeout: float = 30.0, partition_timeout: float | None = None) -> DaskExecutor:
        """Use the scheduler at ``address`` (``tcp://host:8786``)."""
        distributed = _distributed()
        try:
            client = distributed.Client(address, set_as_default=False, timeout=timeout)
        except OSError as err:
            raise ConfigurationError(f"dask executor: cannot reach a scheduler at {address!r} "
                                     f"within {timeout:g} s: {err}") from err
        host = address.split("://")[-1].rsplit(":", 1)[0]
        return cls(client, is_local=host in ("127.0.0.1", "localhost", "::1"), partition_timeout=partition_timeout)

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        distributed = _distributed()
        stage = _stager(self.is_local)
        it = iter(items)
        counter = itertools.count()
        # key -> (future, release of its segment or None, n, item): every task submitted, not yet done with
        in_flight: dict[Any, tuple[Any, Callable[[], None] | None, int, Any]] = {}
        done: queue.SimpleQueue[Any] = queue.SimpleQueue()  # futures as they finish (done callbacks)
        deadlines = Deadlines(self.partition_timeout)
        running: dict[int, Any] = {}  # n -> item of the tasks in flight
        started: queue.SimpleQueue[int] = queue.SimpleQueue()  # n of each task a worker started
        topic = None
        if self.partition_timeout is not None:
            topic = f"detflow-started-{next(_maps)}-{os.getpid()}"
            self.client.subscribe_topic(topic, lambda event: started.put(event[1]))
            task_fn: Callable[..., Any] = _Announced(fn, topic)
        else:
            task_fn = fn

        def submit(item: Any) -> None:
            staged, release = stage(item)
            n = next(counter)
            try:
                future = (self.client.submit(task_fn, n, staged, pure=False) if topic is not None
                          else self.client.submit(task_fn, staged, pure=False))
            except BaseException:
                release()
                raise
            in_flight[future.key] = (future, None if staged is item else release, n, item)
            running[n] = item
            future.add_done_callback(done.put)

        for i in itertools.islice(it, self.in_flight * self.n_workers):
            submit(i)
        try:
            while in_flight:
                while True:
                    try:
                        n = started.get_nowait()
                    except queue.Empty:
                        break
                    if n in running:  # else its result came back before the event did
                        deadlines.start(n, running[n])
                try:
                    # a short wait at a time: Ctrl-C, and partition_timeout in deadlines.wait()
                    future = done.get(timeout=deadlines.wait())
                except queue.Empty:
                    continue
                key = future.key
                if key not in in_flight:
                    continue
                _, release, n, item = in_flight[key]
                try:
                    result = future.result()  # a task's exception is re-raised with its own type
                except distributed.KilledWorker as err:
                    err.add_note(_killed_note(err, item, n))
                    raise
                finally:
                    # drop the future before the segment: a dropped, done task is never run again
                    future = None
                    in_flight.pop(key, None)
                    running.pop(n, None)
                    deadlines.finish(n)
                    if release is not None:
                        release()
                nxt = next(it, _END)
                if nxt is not _END:
                    submit(nxt)
                yield result
        except BaseException as err:
            from detflow.errors import PartitionTimeoutError

            if isinstance(err, PartitionTimeoutError) and self._cluster is not None:
                self._restart_busy(in_flight)
            raise
        finally:
            if topic is not None:
                self.client.unsubscribe_topic(topic)
            for future, release, _, _ in in_flight.values():
                if release is None:
                    future.cancel()  # reads no segment: nothing to wait for
                else:
                    self._linger(future, release)
            in_flight.clear()

    def _restart_busy(self, in_flight: dict[Any, tuple[Any, Any, int, Any]]) -> None:
        """Restart the workers of this executor's own cluster that still run a task of the map
        (one of them hangs: no thread of it can be stopped otherwise)."""
        keys = {str(k) for k in in_flight}
        try:
            processing = self.client.processing()
            busy = [w for w, ks in processing.items() if keys & {str(k) for k in ks}]
            if busy:
                self.client.restart_workers(busy, timeout=60)
        except Exception:  # noqa: BLE001 - the timeout is the error to report, not this
            import logging

            logging.getLogger("detflow").warning("dask executor: could not restart a worker that timed out",
                                                 exc_info=True)

    def _linger(self, future: Any, release: Callable[[], None]) -> None:
        """Keep ``future`` until its task is done, then release its segment (see the module
        docstring: cancelling would not stop a task that already started reading it)."""
        with self._lingering_lock:
            self._lingering[future] = release

        def done(f: Any) -> None:
            with self._lingering_lock:
                rel = self._lingering.pop(f, None)
            if rel is not None:
                rel()

        future.add_done_callback(done)

    def _release_lingering(self) -> None:
        with self._lingering_lock:
            lingering = list(self._lingering.values())
            self._lingering.clear()
        for release in lingering:
            release()

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._release_lingering()  # no task of this client runs any more (or its result counts for nothing)
        if self.is_local:
            from detflow.shm import trim

            trim()  # segments this executor pooled for in-memory partitions

    def __repr__(self) -> str:
        return f"DaskExecutor({self.client.scheduler.address!r}, local={self.is_local})"


def _stager(is_local: bool) -> Callable[[Any], tuple[Any, Callable[[], None]]]:
    if not is_local or os.environ.get("DETFLOW_NO_SHM"):
        return lambda item: (item, lambda: None)
    try:
        from detflow.executors.staging import stage
    except ImportError:
        return lambda item: (item, lambda: None)
    return stage


class _Announced:
    """``fn`` that first tells the driver (an event on ``topic``) that its task started."""

    def __init__(self, fn: Callable[[Any], Any], topic: str) -> None:
        self.fn, self.topic = fn, topic

    def __call__(self, n: int, item: Any) -> Any:
        from distributed import get_worker

        get_worker().log_event(self.topic, n)
        return self.fn(item)


def _killed_note(err: Any, item: Any, n: int) -> str:
    worker = getattr(getattr(err, "last_worker", None), "address", None)
    nodes = describe_nodes(item)
    return (f"{describe_item(item, n)}{' of ' + nodes if nodes else ''} was on worker"
            f"{' ' + worker if worker else ''} when that worker's process died "
            "(out of memory? a crash in native code?)")


_maps = itertools.count()
_END = object()
