"""``pipelined``: persistent worker processes, fed partitions as they free up.

State
-----
The executor owns ``n_workers`` worker processes (:mod:`detflow.executors._worker`),
started once and reused by every run. Each worker has a socket pair to the driver, a
count of items *in flight* on it (sent, no reply yet) and the table of those items.
A run (one :meth:`PipelinedExecutor.map_unordered` call) has a queue of finished
results and the set of its items still in flight.

Policy
------
* **Dispatch**: while a worker has fewer than ``max_in_flight`` items (default 2:
  one running, one waiting, so a worker never idles between items), the next item
  goes to the worker with the fewest in flight (ties: the one fed longest ago).
  Items are taken from the caller's iterable only then, so memory is bounded by
  ``n_workers * max_in_flight`` items however long the stream is.
* **Transport**: an item is staged (:func:`detflow.executors.staging.stage`) just before
  it is sent: a partition of data in memory is copied into shared memory and travels
  by name; a partition of a file is a small recipe that the worker reads itself.
  The segment is released (back to the pool of :mod:`~detflow.shm`, for
  reuse by the next item) when the item's reply arrives, or when the item is
  abandoned or its worker lost; ``close`` unlinks the pool.
* **Results** are yielded as they arrive, whichever worker sends them. A reply for
  another run (two maps consumed in turn) is queued on that run; a reply for an
  abandoned run is dropped, but still frees its worker's slot.
* **Errors** raised by the function keep their type, notes and the worker
  traceback; the run stops at the first one. Its other items are *abandoned*: their
  segments are unlinked and their late replies dropped; the workers stay.
* **Worker loss**: a worker that dies closes its socket, which the driver sees at
  once (and a dead process is also noticed by polling, every ``0.2`` s). The items
  it had fail with :class:`WorkerLostError` naming the worker and the partition, and
  a fresh worker takes its place, so the executor stays usable.
* **Shutdown**: :meth:`close` (also run when the executor is garbage-collected and at
  interpreter exit) stops idle workers politely, terminates busy ones, waits up to
  ``cleanup_timeout`` and then kills, and unlinks every segment it staged. Workers
  exit by themselves when the driver dies (socket EOF, parent-pid watch).

Workers are started with ``subprocess`` running ``python -m
detflow.executors._worker``, never with multiprocessing's spawn or forkserver: those
re-import the user's ``__main__``, so a script without an ``if __name__ ==
"__main__"`` guard would start workers recursively. Here such a script just works;
classes it defines travel by value (cloudpickle).

The executor may be shared between threads (a lock guards its state), but one run at
a time gets the most out of it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Pipe, wait
from typing import Any

import cloudpickle

from detflow import shm
from detflow.errors import ConfigurationError, DetflowError
from detflow.executors._worker import THREAD_ENV_VARS
from detflow.executors.base import check_partition_timeout, default_cpus, describe_item, timed_out
from detflow.executors.shm_stale import remove_stale_segments
from detflow.executors.staging import stage

__all__ = ["PipelinedExecutor", "WorkerLostError", "WorkerSpec"]

#: how often the driver checks for dead worker processes while it waits (seconds)
POLL_INTERVAL = 0.2

#: how often to look for newly arrived live items while tasks run (seconds)
LIVE_POLL = 0.01


class WorkerLostError(DetflowError, RuntimeError):
    """A worker process died while it ran an item (killed, crashed, ``os._exit``)."""


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process: a name (used in errors) and the CPU it is pinned to."""

    name: str
    cpu: int | None = None


@dataclass
class _Task:
    id: int
    run: _Run
    desc: str
    release: Callable[[], None]
    started: float | None = None  # when it became the one its worker runs


@dataclass
class _Run:
    id: int
    active: bool = True
    done: deque[tuple[bool, Any]] = field(default_factory=deque)  # (ok, result or error)
    outstanding: set[int] = field(default_factory=set)


class _Worker:
    """A worker process, its socket and the items in flight on it."""

    def __init__(self, spec: WorkerSpec, *, pin: bool) -> None:
        self.spec = spec
        self.ready = False
        self.tasks: dict[int, _Task] = {}
        self.last_fed = 0
        mine, theirs = Pipe(duplex=True)
        env = dict(os.environ)
        env.update({var: "1" for var in THREAD_ENV_VARS})
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "detflow.executors._worker", "--fd", str(theirs.fileno()),
                 "--parent", str(os.getpid()), "--name", spec.name],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()  # the child has its copy; ours would hide the child's EOF
        self.conn: Connection = mine
        with contextlib.suppress(OSError):  # it died at once: noticed when the driver next listens
            self.send(("init", {"sys_path": [p for p in sys.path if p], "cpu": spec.cpu if pin else None}))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, msg: tuple[Any, ...]) -> None:
        self.conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))

    def how_it_ended(self) -> str:
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return "stopped answering (its connection closed)"
        if code < 0:
            try:
                return f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"

    def stop(self, deadline: float) -> None:
        """Ask politely (idle) or terminate (busy); kill what is left at ``deadline``."""
        if self.proc.poll() is None:
            try:
                if self.tasks:
                    self.proc.terminate()
                else:
                    self.send(("stop",))
            except OSError:
                pass
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5.0)
        self.conn.close()


class _Pool:
    """Everything the executor owns; kept apart so a finalizer can close it."""

    def __init__(self, specs: Sequence[WorkerSpec], *, pin: bool, max_in_flight: int) -> None:
        self.specs = list(specs)
        self.pin = pin
        self.max_in_flight = max_in_flight
        self.lock = threading.RLock()
        self.ids = itertools.count()
        self.workers: list[_Worker] = []
        self.closed = False

    def start(self, timeout: float) -> None:
        self.workers = [_Worker(spec, pin=self.pin) for spec in self.specs]
        deadline = time.monotonic() + timeout
        while not all(w.ready for w in self.workers):
            left = deadline - time.monotonic()
            if left <= 0:
                slow = ", ".join(w.spec.name for w in self.workers if not w.ready)
                raise TimeoutError(f"pipelined executor: worker(s) {slow} did not start within {timeout} s")
            by_conn = {w.conn: w for w in self.workers if not w.ready}
            for conn in wait(list(by_conn), min(left, POLL_INTERVAL)):
                worker = by_conn[conn]  # type: ignore[index]
                try:
                    self.handle(worker, pickle.loads(worker.conn.recv_bytes()))
                except (EOFError, OSError):
                    raise WorkerLostError(
                        f"pipelined worker {worker.spec.name} (pid {worker.pid}) {worker.how_it_ended()} "
                        "while starting; its error output is above"
                    ) from None

    # --- dispatch -----------------------------------------------------------------
    def free_worker(self) -> _Worker | None:
        free = [w for w in self.workers if len(w.tasks) < self.max_in_flight]
        return min(free, key=lambda w: (len(w.tasks), w.last_fed)) if free else None

    def submit(self, run: _Run, fn_bytes: bytes, item: Any, n: int) -> None:
        """Stage ``item`` and send it to the least-loaded worker (one must be free)."""
        staged, release = stage(item)
        try:
            item_bytes = cloudpickle.dumps(staged, protocol=pickle.HIGHEST_PROTOCOL)
            task = _Task(next(self.ids), run, describe_item(item, n), release)
            for _ in range(len(self.workers) + 1):
                worker = self.free_worker()
                assert worker is not None, "submit() needs a free worker"
                try:
                    worker.send(("run", task.id, fn_bytes, item_bytes))
                    break
                except OSError:  # it died since we last listened: replace it, try again
                    self.lost(worker)
            else:
                raise WorkerLostError(f"pipelined executor: no worker would take {task.desc}")
        except BaseException:
            release()
            raise
        if not worker.tasks:
            task.started = time.monotonic()
        worker.tasks[task.id] = task
        worker.last_fed = task.id
        run.outstanding.add(task.id)

    # --- replies ------------------------------------------------------------------
    def pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` for replies; route them to their runs; notice deaths."""
        by_conn = {w.conn: w for w in self.workers}
        for conn in wait(list(by_conn), timeout):
            worker = by_conn[conn]  # type: ignore[index]
            try:
                msg = pickle.loads(worker.conn.recv_bytes())
            except (EOFError, OSError):
                self.lost(worker)
                continue
            self.handle(worker, msg)
        for worker in list(self.workers):
            if worker.proc.poll() is not None and not worker.conn.poll(0):
                self.lost(worker)

    def handle(self, worker: _Worker, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "ready":
            worker.ready = True
            return
        task = worker.tasks.pop(msg[1], None)
        if task is None:  # cannot happen with a well-behaved worker; never crash the driver on it
            return
        if worker.tasks:  # the next one starts now
            head = next(iter(worker.tasks.values()))
            head.started = head.started or time.monotonic()
        task.release()
        run = task.run
        run.outstanding.discard(task.id)
        if not run.active:
            return
        try:
            value = cloudpickle.loads(msg[2])
        except Exception as err:  # noqa: BLE001 - e.g. a class the driver cannot import
            err.add_note(f"while unpickling the reply of pipelined worker {worker.spec.name} for {task.desc}")
            run.done.append((False, err))
            return
        run.done.append((kind == "ok", value))

    def lost(self, worker: _Worker) -> None:
        if worker not in self.workers:
            return
        how = worker.how_it_ended()
        for i, task in enumerate(worker.tasks.values()):  # in order: the first one was running
            task.release()
            task.run.outstanding.discard(task.id)
            if task.run.active:
                doing = f"while running {task.desc}" if i == 0 else f"with {task.desc} queued on it"
                task.run.done.append((False, WorkerLostError(
                    f"pipelined worker {worker.spec.name} (pid {worker.pid}) {how} {doing}; "
                    "a fresh worker has taken its place, so the executor can run again"
                )))
        worker.tasks.clear()
        worker.conn.close()
        self.workers[self.workers.index(worker)] = _Worker(worker.spec, pin=self.pin)

    def check_timeouts(self, run: _Run, limit: float) -> None:
        """A worker whose running task of ``run`` is past ``limit`` is killed; the run gets the error."""
        now = time.monotonic()
        for worker in list(self.workers):
            head = next(iter(worker.tasks.values()), None)
            if head is None or head.run is not run or head.started is None or now - head.started <= limit:
                continue
            del worker.tasks[head.id]
            head.release()
            run.outstanding.discard(head.id)
            run.done.appendleft((False, timed_out(head.desc, limit)))
            with contextlib.suppress(OSError):
                worker.proc.kill()
            worker.proc.wait(timeout=10.0)
            self.lost(worker)

    def abandon(self, run: _Run) -> None:
        """Stop caring for ``run``: free its segments now, drop its late replies."""
        run.active = False
        for worker in self.workers:
            for task_id in run.outstanding:
                task = worker.tasks.get(task_id)
                if task is not None:
                    task.release()
        run.done.clear()

    def close(self, cleanup_timeout: float) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            deadline = time.monotonic() + cleanup_timeout
            for worker in self.workers:
                for task in worker.tasks.values():
                    task.release()
                worker.stop(deadline)
            self.workers = []
            shm.trim()


def _close_pool(pool: _Pool, cleanup_timeout: float) -> None:
    pool.close(cleanup_timeout)


class PipelinedExecutor:
    """Runs items on persistent worker processes, one per core; results as they complete.

    Parameters
    ----------
    spec
        The workers: a list of :class:`WorkerSpec` (see :meth:`make_spec`); default
        one per available CPU.
    pin_workers
        Pin each worker to its CPU (Linux), so workers do not migrate between cores.
    startup_timeout
        Seconds to wait for the workers to start.
    cleanup_timeout
        Seconds :meth:`close` waits for workers to exit before killing them.
    max_in_flight
        Items sent to a worker and not yet answered, at most; bounds memory.
    partition_timeout
        Seconds one item may run on a worker; past that the worker is killed (a fresh
        one takes its place) and the map raises
        :class:`~detflow.errors.PartitionTimeoutError` naming the partition.

    Examples
    --------
    >>> ex = PipelinedExecutor.make_local(cpus=2)
    >>> sorted(ex.map_unordered(abs, [-1, -2, 3]))
    [1, 2, 3]
    >>> ex.close()
    """

    remote = True
    #: workers read shared-memory segments of the driver (live sources receive into them)
    shares_memory = True

    def __init__(
        self,
        spec: Sequence[WorkerSpec] | None = None,
        *,
        pin_workers: bool = True,
        startup_timeout: float = 30.0,
        cleanup_timeout: float = 10.0,
        max_in_flight: int = 2,
        partition_timeout: float | None = None,
    ) -> None:
        self.partition_timeout = check_partition_timeout(partition_timeout, "pipelined")
        specs = list(spec) if spec is not None else self.make_spec()
        if not specs:
            raise ConfigurationError("pipelined executor: spec must name at least one worker; got none")
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ConfigurationError(
                f"pipelined executor: max_in_flight must be an integer >= 1; got {max_in_flight!r}"
            )
        remove_stale_segments()  # left by drivers killed together with their resource tracker
        self.n_workers = len(specs)
        self.pin_workers = pin_workers
        self.cleanup_timeout = cleanup_timeout
        self._pool = _Pool(specs, pin=pin_workers, max_in_flight=max_in_flight)
        self._finalizer = weakref.finalize(self, _close_pool, self._pool, cleanup_timeout)
        try:
            self._pool.start(startup_timeout)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def make_spec(
        cpus: int | Iterable[int] | None = None, cudas: Iterable[int] = (), has_cupy: bool = False
    ) -> list[WorkerSpec]:
        """Worker specs: ``cpus`` workers (a count, or the CPU ids to pin them to).

        A count takes the CPUs this process may run on, in order (cycling if there are
        fewer). ``cudas``/``has_cupy`` exist for LiberTEM compatibility; GPU workers are
        not supported.
        """
        if list(cudas) or has_cupy:
            raise ConfigurationError("pipelined executor: GPU workers (cudas, has_cupy) are not supported")
        try:
            available = sorted(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            available = list(range(os.cpu_count() or 1))
        if cpus is None:
            ids = available
        elif isinstance(cpus, int):
            if cpus < 1:
                raise ConfigurationError(f"pipelined executor: cpus must be an integer >= 1; got {cpus!r}")
            ids = [available[i % len(available)] for i in range(cpus)]
        else:
            ids = [int(c) for c in cpus]
            if not ids:
                raise ConfigurationError("pipelined executor: cpus must name at least one CPU; got none")
        return [WorkerSpec(name=str(i), cpu=cpu) for i, cpu in enumerate(ids)]

    @classmethod
    def make_local(
        cls, *, cpus: int | Iterable[int] | None = None, pin_workers: bool = True, **kwargs: Any
    ) -> PipelinedExecutor:
        """Workers on this machine: one per available CPU, or ``cpus`` of them."""
        return cls(cls.make_spec(cpus if cpus is not None else default_cpus()), pin_workers=pin_workers, **kwargs)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the current workers."""
        return [w.pid for w in self._pool.workers]

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        pool = self._pool
        if pool.closed:
            raise RuntimeError("this pipelined executor is closed; make a new one")
        fn_bytes = cloudpickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        run = _Run(next(pool.ids))
        it = iter(items)
        # a live source's items arrive over time; ready() says whether next() would block
        ready: Callable[[], bool] | None = getattr(it, "ready", None)
        n_taken = 0
        exhausted = False
        try:
            while True:
                with pool.lock:
                    if pool.closed:
                        raise RuntimeError("the pipelined executor was closed during a run")
                    while not exhausted and pool.free_worker() is not None:
                        if ready is not None and run.outstanding and not ready():
                            break  # collect results meanwhile; look again after the pump
                        item = next(it, _END)
                        if item is _END:
                            exhausted = True
                        else:
                            pool.submit(run, fn_bytes, item, n_taken)
                            n_taken += 1
                    if not run.done and not (exhausted and not run.outstanding):
                        pool.pump(LIVE_POLL if ready is not None and not exhausted else POLL_INTERVAL)
                    if self.partition_timeout is not None:
                        pool.check_timeouts(run, self.partition_timeout)
                if run.done:
                    ok, value = run.done.popleft()
                    if not ok:
                        raise value
                    yield value
                elif exhausted and not run.outstanding:
                    return
        finally:
            with pool.lock:
                pool.abandon(run)

    def close(self) -> None:
        """Stop the workers and unlink every shared-memory segment this executor staged."""
        self._finalizer()

    def __enter__(self) -> PipelinedExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._pool.closed else f"workers={self.n_workers}"
        return f"PipelinedExecutor({state}, pin_workers={self.pin_workers})"


_END = object()
