from __future__ import annotations

import numpy as np

from detflow.nodes.sumsig import SumSigUDF
from tests.nodes.udf_cases import Case, case_fixture  # noqa: F401


def test_sumsig_matches_numpy(ctx, case: Case) -> None:
    res = case.run(ctx, SumSigUDF())
    out = res["intensity"].data
    assert out.shape == case.nav
    assert out.dtype == np.result_type(case.data.dtype, np.float32)
    per_frame = case.data.reshape(-1, *case.sig).astype(np.float64).sum(axis=(1, 2))
    np.testing.assert_allclose(out, case.expect_nav(per_frame), rtol=1e-6)
    n_roi = per_frame.size if case.roi is None else int(case.roi.sum())
    assert res["intensity"].raw_data.shape == (n_roi,)
