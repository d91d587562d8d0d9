"""Fixtures every test directory shares: one context per executor.

Every test that takes ``ctx`` (or ``executor``) runs once per executor in
``EXECUTOR_SPECS``; an executor added there inherits the whole suite. Executors are
made once per test session (process pools and clusters are slow to start) and closed
at the end. The inline executor runs with ``debug=True``: partitions and results
round-trip through cloudpickle, so what would break between processes breaks here
as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import detflow as df
from detflow.executors.dask_ import DaskExecutor
from detflow.executors.delayed import DelayedExecutor
from detflow.executors.inline import InlineExecutor
from detflow.executors.pipelined import PipelinedExecutor
from detflow.executors.threads import ThreadedExecutor
from tests.executors.cluster import connect_to_external_cluster

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
