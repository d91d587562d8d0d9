"""Fixtures every test directory shares: one context per executor.

Every test that takes ``ctx`` (or ``executor``) runs once per executor in
``EXECUTOR_SPECS``; an executor added there inherits the whole suite. Executors are
made once per test session (process pools and clusters are slow to start) and closed
at the end. The inline executor runs with ``debug=True``: partitions and results
round-trip through cloudpickle, so what would break between processes breaks here
as well.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import detflow as df
from detflow.executors.dask_ import DaskExecutor
from detflow.executors.delayed import DelayedExecutor
from detflow.executors.inline import InlineExecutor
from detflow.executors.pipelined import PipelinedExecutor
from detflow.executors.threads import ThreadedExecutor
from tests.executors.cluster import connect_to_external_cluster

REPO_ROOT = Path(__file__).resolve().parents[1]
KERNEL_NAME = "detflow-notebook-tests"

EXECUTOR_SPECS: dict[str, Callable[[], Any]] = {
    "inline": lambda: InlineExecutor(debug=True),
    "threads": lambda: ThreadedExecutor(cpus=2),
    "pipelined": lambda: PipelinedExecutor.make_local(cpus=2),
    "delayed-sync": lambda: DelayedExecutor("sync"),
    "delayed-threads": lambda: DelayedExecutor("threads", cpus=2),
    "dask": lambda: DaskExecutor.make_local(cpus=2),
    "dask-connect": connect_to_external_cluster,
}


@pytest.fixture(scope="session")
def _executors() -> Iterator[dict[str, Any]]:
    made: dict[str, Any] = {}
    yield made
    for ex in made.values():
        ex.close()


@pytest.fixture(params=sorted(EXECUTOR_SPECS))
def executor(request: pytest.FixtureRequest, _executors: dict[str, Any]) -> Any:
    name = request.param
    if name not in _executors:
        _executors[name] = EXECUTOR_SPECS[name]()
    return _executors[name]


class _SharedContext(df.Context):
    """A context on a shared executor: closing it leaves the executor to the session."""

    def close(self) -> None:
        pass


@pytest.fixture
def ctx(executor: Any) -> df.Context:
    return _SharedContext(executor)


@pytest.fixture(scope="session")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Jupyter kernel on *this* interpreter (the checkout's detflow and its dependencies).

    Its kernelspec is written into a temporary ``JUPYTER_PATH`` under a name no user's own
    kernelspec can shadow; runtime and IPython folders are temporary as well, so a
    developer's IPython profile or startup scripts cannot change what a notebook does.
    """
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "data" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "detflow tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    with pytest.MonkeyPatch.context() as mp:
        # the checkout's detflow, also where it is not installed (the kernel starts in notebooks/)
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        mp.setenv("JUPYTER_PATH", str(root / "data"))
        mp.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
        mp.setenv("IPYTHONDIR", str(root / "ipython"))
        # jupyter_core 5 releases have warned (DeprecationWarning) about moving their folders to
        # platformdirs' unless told to do so already; under filterwarnings=error that warning,
        # which says nothing about the notebooks, would fail the run
        mp.setenv("JUPYTER_PLATFORM_DIRS", "1")
        yield KERNEL_NAME
