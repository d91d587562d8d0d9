from __future__ import annotations

import numpy as np

from detflow.nodes.logsum import LogsumUDF
from tests.nodes.udf_cases import Case, case_fixture  # noqa: F401


def test_logsum_matches_libertem_formula(ctx, case: Case) -> None:
    res = case.run(ctx, LogsumUDF())
    out = res["logsum"].data
    assert out.dtype == np.float32 and out.shape == case.sig
    expected = np.zeros(case.sig, dtype=np.float64)
    for frame in case.frames:  # LiberTEM: logsum += log(frame - min(frame) + 1), per frame
        expected += np.log(frame - frame.min() + 1)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
