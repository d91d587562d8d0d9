"""Workers: lease a task, run it while a heartbeat renews the lease, record how it ended.

:func:`launch_workers` starts ``num_workers`` worker threads and one heartbeat thread in
the calling process. A worker loops:

1. lease the oldest pending task (``visibility_timeout`` seconds);
2. hand its payload to the processor, which calls the user's callable with the payload
   as keyword arguments plus ``_job_id`` (this launch) and ``_worker_id`` (this worker);
   these two are added for the call only and never stored in the task;
3. meanwhile the heartbeat renews every running lease every quarter of the visibility
   timeout; a renewal that fails means the lease was lost (it expired and another worker
   took the task), and the worker stops that task: the process-pool and dask processors
   kill or cancel it, the sequential one asks it to stop (:func:`should_stop`) and
   discards whatever it returns;
4. success completes the task; an exception records a failed attempt with its error
   text and traceback, and the queue retries the task or parks it as dead.

A worker that finds nothing to lease while other workers (here or in another launcher)
still hold leases waits, polling the queue, since those tasks come back if their
workers die; it stops when nothing is pending or leased, when ``time_limit`` has passed
(it starts no new task after that), after ``max_consecutive_failures`` failures in a row
(a broken environment should not burn through the queue), or when the launch is
interrupted (its leases are released, not counted as failures).

Processors run the callable: :class:`SequentialProcessor` in the worker thread,
:class:`ProcessPoolProcessor` in one child process per worker (killed with the launcher),
:class:`DaskProcessor` on a dask.distributed cluster.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from detflow.batch.base import Lease, LeaseLostError, Queue
from detflow.batch.logs import call_task, task_context
from detflow.errors import ConfigurationError

__all__ = [
    "DaskProcessor",
    "LeaseLostError",
    "ProcessPoolProcessor",
    "Processor",
    "SequentialProcessor",
    "WorkerReport",
    "launch_workers",
    "should_stop",
]

log = logging.getLogger("detflow.batch")

_STOP = threading.local()


def should_stop() -> bool:
    """True inside a task whose lease was lost (long tasks may check it and return early)."""
    event = getattr(_STOP, "event", None)
    return bool(event is not None and event.is_set())


class Processor(Protocol):
    """Runs one task's payload; called from several worker threads at once."""

    def run(self, payload: dict[str, Any], *, job_id: str, worker_id: str, cancel: threading.Event) -> Any: ...

    def close(self) -> None: ...


class SequentialProcessor:
    """Run ``fn`` in the worker's own thread.

    Examples
    --------
    >>> import os, tempfile
    >>> from detflow.batch import SQLiteQueue
    >>> q = SQLiteQueue(os.path.join(tempfile.mkdtemp(), "q.db"))
    >>> _ = q.enqueue([{"x": 1}, {"x": 2}])
    >>> seen = []
    >>> report = launch_workers(q, SequentialProcessor(lambda x, _job_id, _worker_id: seen.append(x)))
    >>> sorted(seen), report.done
    ([1, 2], 2)
    >>> q.close()
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def run(self, payload: dict[str, Any], *, job_id: str, worker_id: str, cancel: threading.Event) -> Any:
        _STOP.event = cancel
        try:
            return call_task(self.fn, payload, job_id, worker_id)
        finally:
            _STOP.event = None

    def close(self) -> None:
        pass


class ProcessPoolProcessor:
    """Run ``fn`` in child processes, one per worker, reused from task to task.

    ``fn`` must pickle (cloudpickle: a module-level function, or a closure over picklable
    values). A child that dies (a segfault, the OOM killer, ``kill -9``) fails its task
    with the signal named, and a fresh child runs the next one. Children die with the
    launcher (Linux's parent-death signal), so a killed launcher leaves no task running
    behind its back.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        import cloudpickle

        self._fn_bytes = cloudpickle.dumps(fn)
        self._children: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _child(self, worker_id: str) -> Any:
        from detflow.batch._child import ChildProcess

        with self._lock:
            child = self._children.get(worker_id)
            if child is None or not child.alive():
                child = ChildProcess(self._fn_bytes)
                self._children[worker_id] = child
        return child

    def run(self, payload: dict[str, Any], *, job_id: str, worker_id: str, cancel: threading.Event) -> Any:
        child = self._child(worker_id)
        try:
            return child.call(payload, job_id, worker_id, cancel)
        except BaseException as err:
            if not getattr(err, "_detflow_from_child", False):  # the child may be busy or broken: start afresh
                child.kill()
                with self._lock:
                    self._children.pop(worker_id, None)
            raise

    def interrupt(self) -> None:
        """Kill every child (their tasks end as interrupted)."""
        with self._lock:
            children = list(self._children.values())
        for c in children:
            c.kill()

    def pids(self) -> dict[str, int]:
        """The process id of each worker's child (for tests and monitoring)."""
        with self._lock:
            return {w: c.pid for w, c in self._children.items() if c.alive()}

    def close(self) -> None:
        with self._lock:
            children, self._children = list(self._children.values()), {}
        for c in children:
            c.stop()


class DaskProcessor:
    """Run ``fn`` as one dask task per queue task on a dask.distributed cluster.

    Parameters
    ----------
    fn
        The callable; it pickles to the cluster's workers, which must see the same files.
    address
        A scheduler (``tcp://host:8786``); or pass ``client``.

    A task whose lease is lost is cancelled; one already running on a dask worker runs to
    its end (dask cannot interrupt a running task) and its result is discarded: its outputs
    are replaced whole, by a rename, by whichever run finishes last, and the queue records
    one completion.
    """

    def __init__(self, fn: Callable[..., Any], *, address: str | None = None, client: Any = None,
                 timeout: float = 30.0) -> None:
        try:
            from distributed import Client
        except ImportError as err:
            from detflow.errors import MissingDependencyError

            raise MissingDependencyError("distributed", "dask", "the dask batch processor") from err
        if client is None and address is None:
            raise ConfigurationError("the dask processor needs a scheduler address (--address tcp://host:8786)")
        self.fn = fn
        self._interrupted = threading.Event()
        self._owned = client is None
        try:
            self.client = client if client is not None else Client(address, timeout=timeout,
                                                                   set_as_default=False)
        except OSError as err:
            raise ConfigurationError(f"cannot reach the dask scheduler at {address!r}: {err}") from err

    def run(self, payload: dict[str, Any], *, job_id: str, worker_id: str, cancel: threading.Event) -> Any:
        fut = self.client.submit(call_task, self.fn, payload, job_id, worker_id, pure=False,
                                 key=f"detflow-batch-{uuid.uuid4().hex}")
        finished = threading.Event()
        fut.add_done_callback(lambda _: finished.set())
        try:
            while not finished.wait(0.25):
                if cancel.is_set():
                    raise LeaseLostError("lease lost; the dask task was cancelled")
                if self._interrupted.is_set():
                    raise InterruptedError("interrupted; the dask task was cancelled")
            return fut.result()
        finally:
            if not fut.done() or cancel.is_set():
                self.client.cancel(fut)

    def interrupt(self) -> None:
        self._interrupted.set()

    def close(self) -> None:
        if self._owned:
            self.client.close()


@dataclass
class WorkerReport:
    """What a launch did, counted over every worker."""

    done: int = 0
    failed: int = 0      # attempts that raised (each retried or parked)
    retried: int = 0     # failed attempts whose task went back to pending
    dead: int = 0        # tasks parked in the dead-letter state by this launch
    lost: int = 0        # leases lost while running (expired and taken by another worker)
    released: int = 0    # leases given back on interrupt
    elapsed: float = 0.0
    stopped_workers: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)


class _Heartbeat(threading.Thread):
    def __init__(self, queue: Queue, visibility_timeout: float) -> None:
        super().__init__(name="detflow-heartbeat", daemon=True)
        self.queue = queue
        self.visibility_timeout = visibility_timeout
        self.interval = visibility_timeout / 4
        self.active: dict[str, tuple[Lease, threading.Event]] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def add(self, lease: Lease, cancel: threading.Event) -> None:
        with self.lock:
            self.active[lease.token] = (lease, cancel)

    def remove(self, lease: Lease) -> None:
        with self.lock:
            self.active.pop(lease.token, None)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            with self.lock:
                running = list(self.active.values())
            for lease, cancel in running:
                with task_context(lease.task_id, lease.worker_id):
                    try:
                        held = self.queue.heartbeat(lease, visibility_timeout=self.visibility_timeout)
                    except Exception as err:  # a busy or unreachable store: try again next beat
                        log.warning("heartbeat failed (will retry): %s", err)
                        continue
                    if not held:
                        log.warning("lease lost (it expired and was given to another worker); stopping the task")
                        cancel.set()


EventCallback = Callable[[str, Lease, str], None]


def worker_ids(job_id: str, num_workers: int) -> list[str]:
    host = socket.gethostname()
    return [f"{host}-{os.getpid()}-{job_id}-w{i}" for i in range(num_workers)]


def launch_workers(
    queue: Queue,
    processor: Processor,
    *,
    num_workers: int = 1,
    visibility_timeout: float = 60.0,
    time_limit: float | None = None,
    max_consecutive_failures: int | None = None,
    on_event: EventCallback | None = None,
    poll_interval: float = 1.0,
    job_id: str | None = None,
) -> WorkerReport:
    """Work through ``queue`` with ``num_workers`` workers until nothing is left to do.

    Parameters
    ----------
    queue
        The queue to lease from.
    processor
        Runs each task (:class:`SequentialProcessor`, :class:`ProcessPoolProcessor`,
        :class:`DaskProcessor`).
    num_workers
        Tasks run at once.
    visibility_timeout
        Seconds a lease lasts without renewal; the heartbeat renews it every quarter of that.
    time_limit
        Seconds after which no new task is started.
    max_consecutive_failures
        A worker stops after this many failed tasks in a row.
    on_event
        Called as ``on_event(kind, lease, detail)`` with kind ``start``, ``done``, ``retry``,
        ``dead``, ``lost`` or ``released`` (from worker threads).
    poll_interval
        Longest wait between looks at the queue while other workers hold its last tasks.
    job_id
        Names this launch in worker ids and in ``_job_id`` (default: random).
    """
    if num_workers < 1:
        raise ConfigurationError(f"num_workers must be >= 1; got {num_workers}")
    if not visibility_timeout > 0:
        raise ConfigurationError(f"visibility_timeout must be > 0 seconds; got {visibility_timeout}")
    job_id = job_id or uuid.uuid4().hex[:8]
    report = WorkerReport()
    stop = threading.Event()
    start = time.monotonic()
    beat = _Heartbeat(queue, visibility_timeout)
    beat.start()
    emit = on_event or (lambda kind, lease, detail: None)
    running: dict[str, tuple[Lease, threading.Event]] = {}

    def one_task(worker_id: str, lease: Lease) -> bool:
        """Run a leased task; True if it failed."""
        cancel = threading.Event()
        running[worker_id] = (lease, cancel)
        beat.add(lease, cancel)
        with task_context(lease.task_id, worker_id):
            log.info("attempt %d started", lease.attempt)
            emit("start", lease, "")
            try:
                processor.run(lease.payload, job_id=job_id, worker_id=worker_id, cancel=cancel)
            except BaseException as err:  # noqa: BLE001 - every failure is recorded
                beat.remove(lease)
                if stop.is_set() and not cancel.is_set():
                    if queue.release(lease):
                        report.add(released=1)
                        emit("released", lease, "")
                        log.info("interrupted; lease released")
                    return False
                if cancel.is_set():
                    report.add(lost=1)
                    emit("lost", lease, "")
                    log.warning("task stopped: its lease was lost")
                    return False
                if not isinstance(err, Exception):
                    raise
                text = f"{type(err).__name__}: {err}"
                tb = "".join(traceback.format_exception(err))
                # a bad graph or option fails the same way every time: no retries for it
                state = queue.fail(lease, text, tb, retry=not isinstance(err, ConfigurationError))
                if state is None:
                    report.add(lost=1)
                    emit("lost", lease, text)
                    log.warning("task failed after its lease was lost: %s", text)
                    return False
                report.add(failed=1, retried=int(state == "pending"), dead=int(state == "dead"))
                emit("retry" if state == "pending" else "dead", lease, text)
                log.error("attempt %d failed (%s): %s", lease.attempt,
                          "will retry" if state == "pending" else "giving up: dead-lettered", text)
                return True
            finally:
                running.pop(worker_id, None)
            beat.remove(lease)
            if cancel.is_set() or not queue.complete(lease):
                report.add(lost=1)
                emit("lost", lease, "")
                log.warning("finished, but the lease had been lost: result discarded")
                return False
            report.add(done=1)
            emit("done", lease, "")
            log.info("attempt %d done", lease.attempt)
            return False

    def worker(worker_id: str) -> None:
        consecutive = 0
        wait = 0.05
        while not stop.is_set():
            if time_limit is not None and time.monotonic() - start > time_limit:
                log.info("worker %s: time limit of %gs reached", worker_id, time_limit)
                return
            try:
                lease = queue.lease(worker_id, visibility_timeout=visibility_timeout)
            except Exception:
                stop.set()
                raise
            if lease is None:
                counts = queue.counts()
                if counts["pending"] == 0 and counts["leased"] == 0:
                    return
                stop.wait(wait)  # others hold the last tasks: they may come back if those workers die
                wait = min(poll_interval, wait * 2)
                continue
            wait = 0.05
            failed = one_task(worker_id, lease)
            consecutive = consecutive + 1 if failed else 0
            if max_consecutive_failures is not None and consecutive >= max_consecutive_failures:
                log.error("worker %s: %d failures in a row; this worker stops", worker_id, consecutive)
                report.stopped_workers.append(worker_id)
                return

    errors: list[BaseException] = []

    def guarded(worker_id: str) -> None:
        try:
            worker(worker_id)
        except BaseException as err:  # noqa: BLE001 - re-raised in the launching thread
            errors.append(err)
            stop.set()

    threads = [threading.Thread(target=guarded, args=(w,), name=f"detflow-{w}", daemon=True)
               for w in worker_ids(job_id, num_workers)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except BaseException:
        stop.set()  # each worker sees `stop` when its task ends and releases the lease
        interrupt = getattr(processor, "interrupt", None)
        if interrupt is not None:
            interrupt()
        for t in threads:
            t.join(30)
        raise
    finally:
        beat.stopped.set()
        report.elapsed = time.monotonic() - start
    if errors:
        raise errors[0]
    return report

