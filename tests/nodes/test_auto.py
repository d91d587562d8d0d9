from __future__ import annotations

import numpy as np
import pytest

from detflow.errors import ParameterError
from detflow.nodes.auto import AutoUDF
from tests.nodes.udf_cases import Case, case_fixture  # noqa: F401


def _stats(frame: np.ndarray) -> np.ndarray:
    return np.array([frame.max(), frame[0, 0]])


def test_auto_scalar_and_vector(ctx, case: Case) -> None:
    flat = case.data.reshape(-1, *case.sig).astype(np.float32)
    res_max, res_stats = ctx.run_udf(dataset=case.load(ctx), udf=[AutoUDF(f=np.max), AutoUDF(f=_stats)], roi=case.roi)
    np.testing.assert_allclose(res_max["result"].data, case.expect_nav(flat.max(axis=(1, 2))))
    expected = np.stack([flat.max(axis=(1, 2)), flat[:, 0, 0]], axis=1)
    assert res_stats["result"].data.shape == (*case.nav, 2)
    np.testing.assert_allclose(res_stats["result"].data, case.expect_nav(expected))


def test_auto_validation() -> None:
    with pytest.raises(ParameterError, match="'f'"):
        AutoUDF(f=3).validate(None)
    with pytest.raises(ParameterError, match="'monitor'"):
        AutoUDF(f=np.max, monitor="yes").validate(None)
