from __future__ import annotations

import numpy as np
import pytest

from detflow.errors import ParameterError
from detflow.nodes.sum import SumUDF
from tests.nodes.udf_cases import Case, case_fixture  # noqa: F401


def test_sum_matches_numpy(ctx, case: Case) -> None:
    res = case.run(ctx, SumUDF())
    out = res["intensity"].data
    assert out.shape == case.sig
    assert out.dtype == np.result_type(case.data.dtype, np.float32)
    np.testing.assert_allclose(out, case.frames.sum(axis=0), rtol=1e-5)


def test_sum_dtype_parameter(ctx) -> None:
    data = np.arange(2 * 3 * 4 * 4, dtype=np.uint16).reshape(2, 3, 4, 4)
    ds = ctx.load("memory", data=data, num_partitions=2)
    out = ctx.run_udf(dataset=ds, udf=SumUDF(dtype="float64"))["intensity"].data
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, data.sum(axis=(0, 1)))


def test_sum_bad_dtype_names_parameter() -> None:
    with pytest.raises(ParameterError, match="'dtype'"):
        SumUDF(dtype="no-such-dtype").validate(None)
