"""Faults of runs: a detector that stops midway, a partition that hangs, a killed process.

Each case runs a real run (threads, processes, signals) and checks what the user is
left with: an error that says what happened, results that do not pretend, nothing
left behind.
"""

from __future__ import annotations

import numpy as np
import pytest

import detflow as df
from detflow.errors import DetectorDisconnectedError
from detflow.nodes import SumSigUDF

DATA = np.random.default_rng(3).integers(1, 100, size=(6, 10, 8, 8)).astype(np.uint16)


# --- partial results ----------------------------------------------------------------------
def test_partial_results_of_frames_that_never_arrived_are_nan_and_masked() -> None:
    with df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("memory").open(data=DATA, disconnect_after=25) as conn:
        aq = ctx.make_acquisition(conn=conn, frames_per_partition=10)
        with pytest.raises(DetectorDisconnectedError) as info:
            ctx.run_udf(dataset=aq, udf=SumSigUDF())
    partial = info.value.partial_results  # type: ignore[attr-defined]
    buf = partial.buffers[0]["intensity"]
    flat = DATA.reshape(60, -1).sum(axis=1, dtype=np.float64)
    got = buf.data.reshape(-1)
    np.testing.assert_array_equal(got[:25], flat[:25])
    assert np.isnan(got[25:]).all()  # never arrived: not a sum of zero
    np.testing.assert_array_equal(buf.valid_mask.reshape(-1), np.arange(60) < 25)
    assert buf.masked_data.count() == 25
