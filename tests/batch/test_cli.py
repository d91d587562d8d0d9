"""``detflow batch`` and ``detflow queue`` as a user runs them: in a subprocess, on generated scans."""

from __future__ import annotations

import re
import sqlite3

import pytest

from tests.batch.scenario import check_done_once, check_outputs, detflow, make_scenario

pytestmark = pytest.mark.slow


@pytest.fixture
def scenario(tmp_path):
    s = make_scenario(tmp_path, n_inputs=3)
    s.open_gate()
    return s


def _summary(stdout: str) -> dict[str, str]:
    return {m[0]: m[1] for m in re.findall(r"^(\w[\w ]*?)\s{2,}(\S+(?: s)?)", stdout, re.M)}


def test_batch_runs_every_input_skips_them_next_time_and_force_reruns(scenario) -> None:
    s = scenario
    first = detflow(*s.args())
    assert first.returncode == 0, first.stderr
    check_outputs(s)
    check_done_once(s)
    summary = _summary(first.stdout)
    assert (summary["tasks"], summary["done"], summary["skipped"], summary["failed"]) == ("3", "3", "0", "0")
    assert "3 new task(s)" in first.stderr

    again = detflow(*s.args())
    assert again.returncode == 0, again.stderr
    assert _summary(again.stdout)["skipped"] == "3" and "3 already complete" in again.stderr

    # an output that is there but incomplete (a crash of a plain `detflow run`) does not count as done
    zarr_json = s.out / "scan1.zarr" / "zarr.json"
    zarr_json.write_text(zarr_json.read_text().replace('"complete": true', '"complete": false'))
    partial = detflow(*s.args())
    assert partial.returncode == 0, partial.stderr
    assert _summary(partial.stdout)["skipped"] == "2"
    assert "done in the queue already" in partial.stderr  # the queue remembers it; --force reruns it

    forced = detflow(*s.args("--force"))
    assert forced.returncode == 0, forced.stderr
    assert "3 reset by --force" in forced.stderr and "this launch: 3" in forced.stdout
    check_outputs(s)


@pytest.mark.parametrize("executor", ["processes", "inline"])
def test_every_log_line_names_the_task_and_the_worker(scenario, executor) -> None:
    """Also with two tasks at once in one process (inline): each log file gets its own task's lines only."""
    s = scenario
    proc = detflow(*s.args("--executor", executor, workers=2))
    assert proc.returncode == 0, proc.stderr
    conn = sqlite3.connect(s.queue)
    ids = {row[1]: row[0] for row in conn.execute("SELECT id, json_extract(payload, '$.input') FROM detflow_tasks")}
    conn.close()
    for inp in s.inputs:
        lines = (s.out / f"{inp.stem}.gated.log").read_text().splitlines()
        assert len(lines) >= 3
        for line in lines:
            assert re.search(rf"task={ids[str(inp)]} worker=\S+-w[01] ", line), line
    console = [ln for ln in proc.stderr.splitlines() if " INFO " in ln]
    assert console and all(re.search(r"task=[0-9a-f]{16} worker=\S+", ln) for ln in console)


def test_a_graph_that_fails_validation_for_one_input_fails_that_task_only(tmp_path) -> None:
    s = make_scenario(tmp_path, n_inputs=3, min_frames=10, short=1)  # scan1 has 4 frames
    s.open_gate()
    proc = detflow(*s.args("--max-retries", "3"))
    assert proc.returncode == 1
    assert _summary(proc.stdout)["done"] == "2" and _summary(proc.stdout)["failed"] == "1"
    assert (s.out / "scan0.zarr").exists() and (s.out / "scan2.zarr").exists()
    assert not (s.out / "scan1.zarr").exists()
    listing = detflow("queue", "list", str(s.queue), "--state", "dead")
    (line,) = listing.stdout.splitlines()
    task = line.split()[0]
    assert "scan1.npy" in line and "min_frames" in line
    shown = detflow("queue", "show", str(s.queue), task[:8])
    assert shown.returncode == 0, shown.stderr
    # a validation error is not retried: one attempt, with the node, the parameter and the traceback
    assert shown.stdout.count("attempt ") == 1
    assert "node 'gate'" in shown.stdout and "parameter 'min_frames'" in shown.stdout
    assert "needs at least 10 frames; the input has 4" in shown.stdout and "Traceback" in shown.stdout


def test_queue_commands(tmp_path) -> None:
    s = make_scenario(tmp_path, n_inputs=2, min_frames=10, short=0)
    s.open_gate()
    detflow(*s.args())
    status = detflow("queue", "status", str(s.queue))
    assert status.returncode == 0
    assert re.search(r"^done\s+1$", status.stdout, re.M) and re.search(r"^dead\s+1$", status.stdout, re.M)
    retried = detflow("queue", "retry", str(s.queue))
    assert "1 task(s) back to pending" in retried.stdout
    assert re.search(r"^pending\s+1$", detflow("queue", "status", str(s.queue)).stdout, re.M)
    purged = detflow("queue", "purge", str(s.queue), "--state", "done", "--yes")
    assert "deleted 1 task(s)" in purged.stdout
    assert len(detflow("queue", "list", str(s.queue)).stdout.splitlines()) == 1
    missing = detflow("queue", "show", str(s.queue), "0000")
    assert missing.returncode == 2 and "no task '0000'" in missing.stderr


def test_bad_input_is_a_clear_error_and_changes_nothing(scenario, tmp_path) -> None:
    s = scenario
    nothing = detflow(*s.args()[:3], str(tmp_path / "nowhere" / "*.hdr"), *s.args()[4:])
    assert nothing.returncode == 2
    assert "matches no file" in nothing.stderr and "nowhere" in nothing.stderr and "Traceback" not in nothing.stderr
    assert not s.queue.exists()  # no queue was made

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00not sqlite\xff" * 64)
    bad = detflow(*s.args("--queue", str(garbage)))
    assert bad.returncode == 1 and "not a readable SQLite database" in bad.stderr and "garbage.db" in bad.stderr
    assert garbage.read_bytes() == b"\x00not sqlite\xff" * 64
    assert not s.out.exists()  # nothing ran
    assert detflow("queue", "status", str(garbage)).returncode == 1
    assert "no such file" in detflow("queue", "status", str(tmp_path / "none.db")).stderr

    first = detflow(*s.args())
    assert first.returncode == 0
    conn = sqlite3.connect(s.queue)
    with conn:
        conn.execute("UPDATE detflow_meta SET value = '7' WHERE key = 'schema_version'")
    conn.close()
    newer = detflow(*s.args("--force"))
    assert newer.returncode == 1 and "newer detflow (queue schema 7" in newer.stderr
    conn = sqlite3.connect(s.queue)
    assert conn.execute("SELECT COUNT(*) FROM detflow_tasks WHERE state = 'done'").fetchone()[0] == 3  # kept
    conn.close()

    bad_set = detflow(*s.args("--set", "nosuch.r=3"))
    assert bad_set.returncode == 2 and "no node 'nosuch'" in bad_set.stderr


def test_dry_run_lists_and_changes_nothing(scenario) -> None:
    s = scenario
    proc = detflow(*s.args("--dry-run"))
    assert proc.returncode == 0, proc.stderr
    assert [ln.split()[0] for ln in proc.stdout.splitlines()] == ["run", "run", "run"]
    assert not s.out.exists()
    conn = sqlite3.connect(s.queue)
    assert conn.execute("SELECT COUNT(*) FROM detflow_tasks").fetchone()[0] == 0
    conn.close()


def test_batch_with_a_postgresql_queue(tmp_path, postgres_server) -> None:
    from detflow.batch import open_queue

    s = make_scenario(tmp_path, n_inputs=2)
    s.open_gate()
    url = postgres_server.new_database()
    proc = detflow(*s.args("--queue", url))
    assert proc.returncode == 0, proc.stderr
    check_outputs(s)
    q = open_queue(url)
    try:
        assert q.counts() == {"pending": 0, "leased": 0, "done": 2, "dead": 0}
    finally:
        q.close()
    status = detflow("queue", "status", url)
    assert re.search(r"^done\s+2$", status.stdout, re.M), status.stderr
