"""A live context on each shared executor (see tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

import detflow as df


class _SharedLiveContext(df.LiveContext):
    """Closing it leaves the executor to the test session."""

    def close(self) -> None:
        pass


@pytest.fixture
def lctx(executor: Any) -> df.LiveContext:
    return _SharedLiveContext(executor)
