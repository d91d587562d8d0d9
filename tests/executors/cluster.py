"""A real dask.distributed cluster in separate processes on 127.0.0.1, for the suite.

``dask scheduler`` and two ``dask worker`` processes are started as programs, as a
user would start them on a cluster, and detflow connects to them with
``DaskExecutor.connect``; closing the executor stops them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from detflow.executors.dask_ import DaskExecutor, worker_env


def _die_with_the_suite() -> None:
    """In the child, before exec: be killed when the test process goes (Linux), so a suite that
    is itself killed (a CI timeout, Ctrl-C twice) leaves no scheduler or worker behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ExternalCluster:
    def __init__(self, n_workers: int = 2, timeout: float = 60.0) -> None:
        port = _free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        env = {**os.environ, **worker_env()}
        py = [sys.executable, "-m"]
        self.procs = [subprocess.Popen(
            [*py, "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", ":0", "--no-show"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
            preexec_fn=_die_with_the_suite,
        )]
        for _ in range(n_workers):
            self.procs.append(subprocess.Popen(
                [*py, "distributed.cli.dask_worker", self.address, "--nthreads", "1", "--nworkers", "1",
                 "--no-nanny", "--host", "127.0.0.1", "--dashboard-address", ":0", "--death-timeout", "60"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
                preexec_fn=_die_with_the_suite,
            ))
        deadline = time.monotonic() + timeout
        self.executor: Any = None
        while self.executor is None:
            try:
                self.executor = DaskExecutor.connect(self.address, timeout=5)
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.2)
        self.executor.client.wait_for_workers(n_workers, timeout=timeout)
        original_close = self.executor.close

        def close() -> None:
            original_close()
            self.stop()

        self.executor.close = close

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


def connect_to_external_cluster() -> DaskExecutor:
    return ExternalCluster().executor
