from __future__ import annotations

import numpy as np

from detflow.nodes.pick import PickUDF
from tests.nodes.udf_cases import Case, case_fixture  # noqa: F401


def test_pick_returns_roi_frames_in_order(ctx, case: Case) -> None:
    res = case.run(ctx, PickUDF())
    out = res["intensity"].data
    assert out.dtype == case.data.dtype
    if case.roi is None:  # LiberTEM: every frame, shaped nav + sig
        np.testing.assert_array_equal(out, case.data)
    else:
        np.testing.assert_array_equal(out, case.data[case.roi])


def test_pick_single_frame(ctx) -> None:
    data = np.arange(4 * 5 * 3 * 2, dtype=np.int16).reshape(4, 5, 3, 2)
    roi = np.zeros((4, 5), dtype=bool)
    roi[3, 1] = True
    ds = ctx.load("memory", data=data, num_partitions=4)
    out = ctx.run_udf(dataset=ds, udf=PickUDF(), roi=roi)["intensity"].data
    np.testing.assert_array_equal(out, data[3:4, 1])
