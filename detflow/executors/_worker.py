"""A worker process of the ``pipelined`` executor (started as ``python -m`` this module).

It never imports the user's ``__main__``: the driver starts it with
``subprocess.Popen([sys.executable, "-m", "detflow.executors._worker", ...])`` and
hands it one end of a socket pair (``--fd``); functions and items arrive cloudpickled,
so UDF classes defined in a script travel by value.

Messages are pickled tuples. Driver to worker::

    ("init", {"sys_path": [...], "cpu": 3 | None})
    ("run", task_id, fn_bytes, item_bytes)
    ("stop",)

Worker to driver::

    ("ready", pid)
    ("ok", task_id, result_bytes)
    ("err", task_id, exception_bytes)

A reader thread drains the socket into a queue, so the driver never blocks sending
while the worker is busy sending a large result back. The worker exits when it is
told to stop, when the driver's end of the socket closes, and (checked every
half second) when its parent process is gone, so no worker outlives its driver.
SIGINT is ignored: Ctrl-C belongs to the driver, which then stops its workers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import queue
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

#: thread-count variables pinned to 1 in every worker: each worker is one core
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "BLIS_NUM_THREADS",
)

_STOP = object()


def _exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # exiting regardless
            stream.flush()
    os._exit(code)


def _read_loop(conn: Connection, inbox: queue.Queue[Any], parent: int) -> None:
    """Move messages from the driver into ``inbox``; exit when the driver is gone."""
    while True:
        try:
            if not conn.poll(0.5):
                if os.getppid() != parent:
                    _exit(3)  # the driver died and its end of the socket lives on elsewhere
                continue
            inbox.put(pickle.loads(conn.recv_bytes()))
        except (EOFError, OSError):
            _exit(0)  # the driver hung up: nobody is waiting for what we would compute


def encode_error(err: BaseException, tb_text: str, where: str) -> bytes:
    """``err`` pickled with its type and notes, plus the worker traceback.

    An exception that cannot make the round trip through pickle becomes a
    ``RuntimeError`` carrying its ``repr`` and the traceback text.
    """
    import cloudpickle

    if isinstance(err, Exception):
        notes = getattr(err, "__notes__", [])
        if not any(str(n).startswith("worker traceback") for n in notes):
            err.add_note(f"worker traceback ({where}):\n{tb_text.rstrip()}")
        try:
            data = cloudpickle.dumps(err)
            pickle.loads(data)  # some exceptions pickle but cannot be rebuilt
            return bytes(data)
        except Exception:  # noqa: BLE001 - fall through to the plain RuntimeError
            pass
        what = f"{err!r} (it could not be pickled back to the driver)"
    else:  # SystemExit and friends must not end the driver: report them instead
        what = f"the task raised {err!r}"
    return bytes(cloudpickle.dumps(RuntimeError(f"{what} in {where}\n{tb_text.rstrip()}")))


def serve(conn: Connection, *, name: str, parent: int) -> None:
    """Run tasks from ``conn`` until told to stop."""
    import cloudpickle

    inbox: queue.Queue[Any] = queue.Queue()
    threading.Thread(target=_read_loop, args=(conn, inbox, parent), daemon=True,
                     name="detflow-reader").start()
    where = f"worker {name}, pid {os.getpid()}"
    conn.send_bytes(pickle.dumps(("ready", os.getpid())))
    fn_key: bytes | None = None
    fn: Any = None
    while True:
        msg = inbox.get()
        kind = msg[0]
        if kind == "stop":
            return
        if kind == "init":
            opts = msg[1]
            for entry in reversed(opts.get("sys_path", [])):
                if entry not in sys.path:
                    sys.path.insert(0, entry)
            cpu = opts.get("cpu")
            if cpu is not None and hasattr(os, "sched_setaffinity"):
                with contextlib.suppress(OSError):  # a CPU we may not use: run unpinned
                    os.sched_setaffinity(0, {cpu})
            continue
        _, task_id, fn_bytes, item_bytes = msg
        try:
            if fn_bytes != fn_key:
                fn, fn_key = cloudpickle.loads(fn_bytes), fn_bytes
            result = fn(cloudpickle.loads(item_bytes))
            reply = ("ok", task_id, cloudpickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
            del result
        except BaseException as err:  # noqa: BLE001 - every failure goes back to the driver
            reply = ("err", task_id, encode_error(err, traceback.format_exc(), where))
            del err
        conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        del reply


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m detflow.executors._worker")
    parser.add_argument("--fd", type=int, required=True, help="this worker's end of the socket pair")
    parser.add_argument("--parent", type=int, required=True, help="pid of the driver")
    parser.add_argument("--name", default="0")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(args.fd)
    with contextlib.suppress(EOFError, OSError):  # the driver hung up
        serve(conn, name=args.name, parent=args.parent)
    _exit(0)


if __name__ == "__main__":
    main()
