"""A child process that runs batch tasks for one worker: ``python -m detflow.batch._child FD``.

The parent sends the pickled callable once, then one ``(payload, job_id, worker_id)``
message per task over a socket pair; the child answers ``("ok", result)`` or
``("error", exception or None, text, traceback)``. Started as a program (not forked), so
user scripts need no ``if __name__ == "__main__"`` guard, and the launcher's threads and
open queue connection are not copied into it. On Linux the child asks the kernel to kill
it when its parent dies, so a ``kill -9`` of the launcher takes its running tasks with it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection, wait
from typing import Any

from detflow.batch.base import LeaseLostError

__all__ = ["ChildProcess"]


class ChildDiedError(RuntimeError):
    """The worker's child process died while running the task."""


class ChildProcess:
    """One child process and the connection to it."""

    def __init__(self, fn_bytes: bytes) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "detflow.batch._child", str(child.fileno()), str(os.getpid())],
                pass_fds=[child.fileno()], env=env,
            )
        finally:
            child.close()
        self.pid = self.proc.pid
        self.conn = Connection(parent.detach())
        self.conn.send_bytes(fn_bytes)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, payload: dict[str, Any], job_id: str, worker_id: str, cancel: threading.Event) -> Any:
        try:
            self.conn.send((payload, job_id, worker_id))
        except OSError as err:
            raise self._died() from err
        while True:
            if cancel.is_set():
                self.kill()
                raise LeaseLostError("lease lost; the task's process was killed")
            if wait([self.conn], timeout=0.25):  # an answer, or end of file if the child died
                try:
                    message = self.conn.recv()
                except (EOFError, OSError) as err:
                    raise self._died() from err
                break
        if message[0] == "ok":
            return message[1]
        _, exc, text, tb = message
        if exc is None:
            exc = RuntimeError(text)
        exc.add_note("worker traceback:\n" + tb.rstrip())
        exc._detflow_from_child = True
        raise exc

    def _died(self) -> ChildDiedError:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
        return ChildDiedError(f"the worker's process {self.pid} died while running the task ({how})")

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Ask it to exit (end of input), then make sure."""
        with contextlib.suppress(OSError):
            self.conn.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def main(argv: list[str]) -> None:
    import cloudpickle

    from detflow.batch import logs

    fd, parent_pid = int(argv[0]), int(argv[1])
    _die_with_parent(parent_pid)

    console = logs.install()
    console.setLevel(os.environ.get("DETFLOW_BATCH_CONSOLE_LEVEL", "INFO"))
    conn = Connection(fd)
    fn = cloudpickle.loads(conn.recv_bytes())
    while True:
        try:
            payload, job_id, worker_id = conn.recv()
        except EOFError:
            return
        try:
            result = logs.call_task(fn, payload, job_id, worker_id)
            conn.send(("ok", result))
        except Exception as err:
            import traceback

            tb = "".join(traceback.format_exception(err))
            text = f"{type(err).__name__}: {err}"
            try:
                exc = pickle.loads(pickle.dumps(err))
            except Exception:
                exc = None
            conn.send(("error", exc, text, tb))


if __name__ == "__main__":
    main(sys.argv[1:])
