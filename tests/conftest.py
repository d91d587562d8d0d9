"""Fixtures every test directory shares: one context per executor.

Every test that takes ``ctx`` (or ``executor``) runs once per executor in
``EXECUTOR_SPECS``; an executor added there inherits the whole suite. The inline
executor runs with ``debug=True``: partitions and results round-trip through
cloudpickle, so what would break between processes breaks here as well.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import detflow as df
from detflow.executors.inline import InlineExecutor
from detflow.executors.threads import ThreadedExecutor

EXECUTOR_SPECS = {
    "inline": lambda: InlineExecutor(debug=True),
    "threads": lambda: ThreadedExecutor(cpus=2),
}


@pytest.fixture(params=sorted(EXECUTOR_SPECS))
def executor(request: pytest.FixtureRequest) -> Iterator[object]:
    ex = EXECUTOR_SPECS[request.param]()
    yield ex
    ex.close()


@pytest.fixture
def ctx(executor: object) -> df.Context:
    return df.Context(executor)  # type: ignore[arg-type]
