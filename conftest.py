"""Doctest namespace: the examples in docstrings run against a small dataset.

``ctx`` is an inline context, ``data`` a (4, 5, 16, 16) uint16 array, ``ds`` that array
loaded as a memory dataset, ``np`` numpy.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def _doctest_names(doctest_namespace: dict) -> None:
    import detflow as df

    data = np.random.default_rng(0).integers(0, 100, size=(4, 5, 16, 16)).astype(np.uint16)
    ctx = df.Context.make_with("inline")
    doctest_namespace.update(np=np, ctx=ctx, data=data, ds=ctx.load("memory", data=data, num_partitions=2))
