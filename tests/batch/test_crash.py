"""Crash safety, for real: launchers and workers killed with SIGKILL mid-task, then run again.

Every test holds its tasks at the gate UDF (see gate_udf.py) so that the kill lands while
tasks certainly run, with their outputs staged but not in place; the waits are on files
and on the queue, never on sleeps. The visibility timeout is short (4 s, renewed every
second) only where the test needs a lease to expire; the checks hold even if a renewal
comes late on a loaded machine (a lost lease is a retry, never a second completion).
"""

from __future__ import annotations

import pytest

from detflow.batch import SQLiteQueue
from tests.batch.scenario import (
    alive,
    check_done_once,
    check_no_half_written,
    check_outputs,
    detflow,
    kill9,
    make_scenario,
    start,
    wait_until,
)

SHORT = 4.0

pytestmark = pytest.mark.slow


def _queue_states(s) -> dict[str, int]:
    q = SQLiteQueue(s.queue, create=False)
    try:
        return {t.id: t.state for t in q.tasks()}
    finally:
        q.close()


def test_kill_the_launcher_mid_run_then_run_again(tmp_path) -> None:
    s = make_scenario(tmp_path)
    args = s.args(visibility_timeout=SHORT)
    launcher = start(s, *args)
    wait_until(lambda: len(s.started()) == 2, "two tasks at the gate", procs=(launcher,))
    children = s.started()
    kill9(launcher.pid)
    launcher.wait()
    wait_until(lambda: not any(alive(p) for p in children), "the workers to die with the launcher")
    assert check_no_half_written(s) == 0
    at_kill = _queue_states(s)
    assert sorted(at_kill.values()) == ["leased", "leased", "pending", "pending"]
    s.open_gate()
    again = detflow(*args)
    assert again.returncode == 0, again.stderr
    check_outputs(s)
    attempts = check_done_once(s)
    killed = [t for t, state in at_kill.items() if state == "leased"]
    assert [attempts[t][0].outcome for t in killed] == ["expired", "expired"]  # their leases ran out
    assert "skipped         0" in again.stdout and "failed          0" in again.stdout


def test_kill_a_worker_mid_run(tmp_path) -> None:
    s = make_scenario(tmp_path)
    launcher = start(s, *s.args(visibility_timeout=60))
    wait_until(lambda: len(s.started()) == 2, "two tasks at the gate", procs=(launcher,))
    victim = s.started()[0]
    kill9(victim)
    s.open_gate()
    rc, out, err = launcher.wait()
    assert rc == 0, err
    check_outputs(s)
    attempts = check_done_once(s)
    failed = [a for att in attempts.values() for a in att if a.outcome == "failed"]
    assert len(failed) == 1 and f"process {victim} died while running the task (signal SIGKILL)" in failed[0].error
    assert "retried         1" in out


def test_kill_a_worker_and_the_launcher_then_run_again(tmp_path) -> None:
    s = make_scenario(tmp_path)
    args = s.args(visibility_timeout=SHORT)
    launcher = start(s, *args)
    wait_until(lambda: len(s.started()) == 2, "two tasks at the gate", procs=(launcher,))
    children = s.started()
    kill9(children[0])
    kill9(launcher.pid)
    launcher.wait()
    wait_until(lambda: not any(alive(p) for p in children), "every worker to be gone")
    assert check_no_half_written(s) == 0
    s.open_gate()
    again = detflow(*args)
    assert again.returncode == 0, again.stderr
    check_outputs(s)
    check_done_once(s)
    assert check_no_half_written(s) == 3 * len(s.inputs)


def test_two_launchers_share_one_queue(tmp_path) -> None:
    s = make_scenario(tmp_path, n_inputs=6)
    args = s.args(workers=1, visibility_timeout=60)
    a, b = start(s, *args), start(s, *args)
    # one worker each: two tasks at the gate at once means both launchers are working
    wait_until(lambda: len(s.started()) == 2, "a task from each launcher at the gate", procs=(a, b))
    s.open_gate()
    for p in (a, b):
        rc, out, err = p.wait()
        assert rc == 0, err
    check_outputs(s)
    attempts = check_done_once(s)
    launchers = {x.worker_id.rsplit("-", 3)[1] for att in attempts.values() for x in att}
    assert launchers == {str(a.pid), str(b.pid)}


def test_sigterm_stops_the_tasks_and_releases_their_leases(tmp_path) -> None:
    s = make_scenario(tmp_path, n_inputs=3)
    launcher = start(s, *s.args(visibility_timeout=600))  # no lease may need to expire for the rerun
    wait_until(lambda: len(s.started()) == 2, "two tasks at the gate", procs=(launcher,))
    children = s.started()
    launcher.proc.terminate()
    rc, out, err = launcher.wait()
    assert rc == 130 and "leases released" in err
    assert not any(alive(p) for p in children)
    assert sorted(_queue_states(s).values()) == ["pending"] * 3
    assert check_no_half_written(s) == 0
    s.open_gate()
    again = detflow(*s.args(visibility_timeout=600))
    assert again.returncode == 0, again.stderr
    check_outputs(s)
    attempts = check_done_once(s)
    assert sorted(a.outcome for att in attempts.values() for a in att) == ["done"] * 3 + ["released"] * 2
