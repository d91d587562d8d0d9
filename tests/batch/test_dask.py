"""Scale-out: ``detflow batch --executor dask --address ...`` on a real scheduler and two workers.

The scheduler and the workers are separate programs (tests/executors/cluster.py). Each
worker has one thread, and the test waits until two tasks are held at the gate at once,
so both workers are shown to run tasks while the launcher holds the queue.
"""

from __future__ import annotations

import pytest

from tests.batch.scenario import REPO, check_done_once, check_outputs, make_scenario, start, wait_until
from tests.executors.cluster import ExternalCluster

pytestmark = pytest.mark.slow


def test_batch_on_a_dask_cluster(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the workers import the gate UDF from the tests
    cluster = ExternalCluster(n_workers=2)
    try:
        s = make_scenario(tmp_path, n_inputs=4)
        launcher = start(s, *s.args("--executor", "dask", "--address", cluster.address, workers=2))
        wait_until(lambda: len(s.started()) == 2, "a task on each dask worker", procs=(launcher,))
        assert set(s.started()) == {p.pid for p in cluster.procs[1:]}  # run by the workers, not the launcher
        s.open_gate()
        rc, out, err = launcher.wait()
        assert rc == 0, err
        check_outputs(s)
        attempts = check_done_once(s)
        assert [a.outcome for att in attempts.values() for a in att] == ["done"] * 4  # no spurious failures
        assert "this launch: 4" in out
    finally:
        cluster.executor.close()
