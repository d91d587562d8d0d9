from __future__ import annotations

import numpy as np
import pytest

from detflow.nodes.stddev import StdDevUDF
from tests.nodes.udf_cases import Case, case_fixture  # noqa: F401


def test_stddev_matches_numpy(ctx, case: Case) -> None:
    res = case.run(ctx, StdDevUDF())
    frames = case.frames
    n = frames.shape[0]
    assert res["num_frames"].data[0] == n
    for name in ("var", "std", "mean", "sum", "varsum"):
        assert res[name].data.shape == case.sig
        assert res[name].data.dtype == np.float64
    np.testing.assert_allclose(res["mean"].data, frames.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(res["sum"].data, frames.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(res["var"].data, frames.var(axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res["std"].data, frames.std(axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res["varsum"].data, frames.var(axis=0) * n, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("num_partitions", [1, 2, 5, 12])
def test_stddev_large_offset_is_stable(ctx, num_partitions: int) -> None:
    # a small spread on a large mean: the naive sum-of-squares formula loses it all
    rng = np.random.default_rng(3)
    data = (1e8 + rng.normal(0, 1, size=(12, 4, 6))).reshape(3, 4, 4, 6)
    ds = ctx.load("memory", data=data, num_partitions=num_partitions)
    res = ctx.run_udf(dataset=ds, udf=StdDevUDF())
    flat = data.reshape(-1, 4, 6)
    np.testing.assert_allclose(res["var"].data, flat.var(axis=0), rtol=1e-7)


def test_stddev_float32_dtype(ctx) -> None:
    data = np.arange(2 * 3 * 4 * 4, dtype=np.uint16).reshape(2, 3, 4, 4)
    ds = ctx.load("memory", data=data, num_partitions=2)
    res = ctx.run_udf(dataset=ds, udf=StdDevUDF(dtype="float32"))
    assert res["var"].data.dtype == np.float32
    np.testing.assert_allclose(res["var"].data, data.reshape(6, 4, 4).var(axis=0), rtol=1e-6)
