"""The queue's logic in SQL, shared by the SQLite and PostgreSQL stores.

Three tables: ``detflow_meta`` (``schema_version``), ``detflow_tasks`` (one row per task:
payload, state, failures, the current lease's token, worker and expiry) and
``detflow_attempts`` (one row per attempt, never deleted but with its task).

Every change happens in one transaction that first takes the rows it changes: SQLite
serialises writers (``BEGIN IMMEDIATE``), PostgreSQL locks the rows it picks with
``FOR UPDATE SKIP LOCKED`` so concurrent leases take different tasks without waiting
on each other. Leases that have run past their expiry are swept (recorded as an
``expired`` attempt, the task back to pending or dead) at the start of every lease and
every count, by whichever process asks first.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from detflow.batch.base import (
    STATES,
    Attempt,
    EnqueueResult,
    Lease,
    QueueError,
    QueueSchemaError,
    TaskInfo,
    canonical_json,
    task_id,
)
from detflow.errors import ConfigurationError

__all__ = ["SCHEMA_VERSION", "SQLQueue"]

#: The schema this detflow writes; a queue with a higher one is refused.
SCHEMA_VERSION = 1

_TASK_COLUMNS = "id, payload, state, failures, max_retries, worker_id, lease_expires, created, updated"
_CHUNK = 500


def _task(row: Sequence[Any], attempts: tuple[Attempt, ...] = ()) -> TaskInfo:
    return TaskInfo(id=row[0], payload=json.loads(row[1]), state=row[2], failures=int(row[3]),
                    max_retries=int(row[4]), worker_id=row[5], lease_expires=row[6], created=row[7],
                    updated=row[8], attempts=attempts)


class SQLQueue:
    """The queue's operations over a DB-API connection; subclasses supply the dialect.

    Subclasses set ``placeholder`` and ``skip_locked`` and implement ``_transaction``
    (a context manager yielding a cursor inside one write transaction), ``_now(cur)``
    and ``_create_schema(cur)``.
    """

    location: str
    placeholder = "?"
    skip_locked = ""

    # --- dialect hooks ----------------------------------------------------------------
    def _transaction(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _now(self, cur: Any) -> float:
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._q(sql), tuple(params))
        return cur

    # --- schema -------------------------------------------------------------------------
    def _check_schema(self, cur: Any) -> None:
        row = self._exec(cur, "SELECT value FROM detflow_meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            raise QueueError(f"queue {self.location!r}: has no schema version; it is not a detflow queue")
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise QueueSchemaError(
                f"queue {self.location!r}: written by a newer detflow (queue schema {version}; this detflow "
                f"reads schema {SCHEMA_VERSION} and older); upgrade detflow, or use another --queue"
            )

    @staticmethod
    def schema_statements(id_type: str = "TEXT", real: str = "REAL", serial: str = "INTEGER PRIMARY KEY") -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS detflow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS detflow_tasks (seq {serial}, id {id_type} UNIQUE NOT NULL, "
            "payload TEXT NOT NULL, state TEXT NOT NULL, failures INTEGER NOT NULL DEFAULT 0, "
            "attempts INTEGER NOT NULL DEFAULT 0, max_retries INTEGER NOT NULL, token TEXT, worker_id TEXT, "
            f"lease_expires {real}, created {real} NOT NULL, updated {real} NOT NULL)",
            "CREATE INDEX IF NOT EXISTS detflow_tasks_state ON detflow_tasks (state, seq)",
            f"CREATE TABLE IF NOT EXISTS detflow_attempts (task_id {id_type} NOT NULL, number INTEGER NOT NULL, "
            f"worker_id TEXT NOT NULL, token TEXT NOT NULL, started {real} NOT NULL, ended {real}, "
            "outcome TEXT NOT NULL, error TEXT, traceback TEXT, PRIMARY KEY (task_id, number))",
        ]

    # --- writing --------------------------------------------------------------------
    def enqueue(self, payloads: Iterable[Mapping[str, Any]], *, max_retries: int = 2,
                force: bool = False) -> EnqueueResult:
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0; got {max_retries}")
        rows: dict[str, str] = {}
        for p in payloads:
            rows.setdefault(task_id(p), canonical_json(p))
        added: list[str] = []
        existing: list[str] = []
        reset: list[str] = []
        ids = list(rows)
        with self._transaction() as cur:
            now = self._now(cur)
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                found = {r[0]: r[1] for r in self._exec(
                    cur, f"SELECT id, state FROM detflow_tasks WHERE id IN ({marks})", chunk).fetchall()}
                new = [i for i in chunk if i not in found]
                if new:
                    cur.executemany(self._q(
                        "INSERT INTO detflow_tasks (id, payload, state, max_retries, created, updated) "
                        "VALUES (?, ?, 'pending', ?, ?, ?)"), [(i, rows[i], max_retries, now, now) for i in new])
                added += new
                existing += [i for i in chunk if i in found]
                if force:
                    again = [i for i in chunk if found.get(i) in ("done", "dead")]
                    if again:
                        marks = ",".join("?" * len(again))
                        self._exec(cur, f"UPDATE detflow_tasks SET state = 'pending', failures = 0, "
                                        f"max_retries = ?, updated = ? WHERE id IN ({marks})",
                                   [max_retries, now, *again])
                    reset += again
        return EnqueueResult(tuple(added), tuple(existing), tuple(reset))

    def _sweep(self, cur: Any, now: float) -> None:
        expired = self._exec(
            cur, "SELECT id, attempts, failures, max_retries, worker_id FROM detflow_tasks "
                 f"WHERE state = 'leased' AND lease_expires < ? {self.skip_locked}", [now]).fetchall()
        for tid, number, failures, max_retries, worker in expired:
            self._end(cur, tid, number, failures, max_retries, now, "expired",
                      f"lease expired: worker {worker} stopped renewing it (killed, hung or cut off)", None)

    def _end(self, cur: Any, tid: str, number: int, failures: int, max_retries: int, now: float,
             outcome: str, error: str | None, tb: str | None, retry: bool = True) -> str:
        failures += 1
        state = "pending" if retry and failures <= max_retries else "dead"
        self._exec(cur, "UPDATE detflow_tasks SET state = ?, failures = ?, token = NULL, lease_expires = NULL, "
                        "updated = ? WHERE id = ?", [state, failures, now, tid])
        self._exec(cur, "UPDATE detflow_attempts SET ended = ?, outcome = ?, error = ?, traceback = ? "
                        "WHERE task_id = ? AND number = ?", [now, outcome, error, tb, tid, number])
        return state

    def lease(self, worker_id: str, *, visibility_timeout: float) -> Lease | None:
        if not visibility_timeout > 0:
            raise ConfigurationError(f"visibility_timeout must be > 0 seconds; got {visibility_timeout}")
        token = secrets.token_hex(8)
        with self._transaction() as cur:
            now = self._now(cur)
            self._sweep(cur, now)
            row = self._exec(cur, "SELECT id, payload, attempts FROM detflow_tasks WHERE state = 'pending' "
                                  f"ORDER BY seq LIMIT 1 {self.skip_locked}").fetchone()
            if row is None:
                return None
            tid, payload, attempts = row
            number = int(attempts) + 1
            expires = now + visibility_timeout
            self._exec(cur, "UPDATE detflow_tasks SET state = 'leased', attempts = ?, token = ?, worker_id = ?, "
                            "lease_expires = ?, updated = ? WHERE id = ?",
                       [number, token, worker_id, expires, now, tid])
            self._exec(cur, "INSERT INTO detflow_attempts (task_id, number, worker_id, token, started, outcome) "
                            "VALUES (?, ?, ?, ?, ?, 'running')", [tid, number, worker_id, token, now])
        return Lease(tid, json.loads(payload), token, worker_id, number, expires)

    def _held(self, cur: Any, lease: Lease) -> tuple[int, int, int] | None:
        lock = " FOR UPDATE" if self.skip_locked else ""
        row = self._exec(cur, "SELECT attempts, failures, max_retries FROM detflow_tasks "
                              f"WHERE id = ? AND token = ? AND state = 'leased'{lock}",
                         [lease.task_id, lease.token]).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]))

    def heartbeat(self, lease: Lease, *, visibility_timeout: float) -> bool:
        with self._transaction() as cur:
            now = self._now(cur)
            n = self._exec(cur, "UPDATE detflow_tasks SET lease_expires = ?, updated = ? "
                                "WHERE id = ? AND token = ? AND state = 'leased'",
                           [now + visibility_timeout, now, lease.task_id, lease.token]).rowcount
        return bool(n == 1)

    def complete(self, lease: Lease) -> bool:
        with self._transaction() as cur:
            now = self._now(cur)
            held = self._held(cur, lease)
            if held is None:
                return False
            self._exec(cur, "UPDATE detflow_tasks SET state = 'done', token = NULL, lease_expires = NULL, "
                            "updated = ? WHERE id = ?", [now, lease.task_id])
            self._exec(cur, "UPDATE detflow_attempts SET ended = ?, outcome = 'done' WHERE task_id = ? AND number = ?",
                       [now, lease.task_id, held[0]])
        return True

    def fail(self, lease: Lease, error: str, traceback: str = "", *, retry: bool = True) -> str | None:
        with self._transaction() as cur:
            now = self._now(cur)
            held = self._held(cur, lease)
            if held is None:
                return None
            number, failures, max_retries = held
            return self._end(cur, lease.task_id, number, failures, max_retries, now, "failed",
                             error, traceback or None, retry)

    def release(self, lease: Lease) -> bool:
        with self._transaction() as cur:
            now = self._now(cur)
            held = self._held(cur, lease)
            if held is None:
                return False
            self._exec(cur, "UPDATE detflow_tasks SET state = 'pending', token = NULL, lease_expires = NULL, "
                            "updated = ? WHERE id = ?", [now, lease.task_id])
            self._exec(cur, "UPDATE detflow_attempts SET ended = ?, outcome = 'released' "
                            "WHERE task_id = ? AND number = ?", [now, lease.task_id, held[0]])
        return True

    def retry(self, ids: Sequence[str] | None = None, *, state: str = "dead") -> int:
        with self._transaction() as cur:
            now = self._now(cur)
            if ids is None:
                _check_state(state)
                return int(self._exec(cur, "UPDATE detflow_tasks SET state = 'pending', failures = 0, updated = ? "
                                           "WHERE state = ?", [now, state]).rowcount)
            full = [self._resolve(cur, i) for i in ids]
            n = 0
            for tid in full:
                n += self._exec(cur, "UPDATE detflow_tasks SET state = 'pending', failures = 0, updated = ? "
                                     "WHERE id = ? AND state IN ('dead', 'done', 'pending')", [now, tid]).rowcount
            return n

    def purge(self, state: str | None = None) -> int:
        if state == "leased":
            raise ConfigurationError("leased tasks are being worked on and cannot be purged; "
                                     "wait for them or for their leases to expire")
        if state is not None:
            _check_state(state)
        where = "state = ?" if state else "state <> 'leased'"
        params = [state] if state else []
        with self._transaction() as cur:
            self._exec(cur, "DELETE FROM detflow_attempts WHERE task_id IN "
                            f"(SELECT id FROM detflow_tasks WHERE {where})", params)
            return int(self._exec(cur, f"DELETE FROM detflow_tasks WHERE {where}", params).rowcount)

    # --- reading ----------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self._transaction() as cur:
            self._sweep(cur, self._now(cur))
            rows = self._exec(cur, "SELECT state, COUNT(*) FROM detflow_tasks GROUP BY state").fetchall()
        out = dict.fromkeys(STATES, 0)
        out.update({r[0]: int(r[1]) for r in rows})
        return out

    def tasks(self, state: str | None = None, *, limit: int | None = None) -> list[TaskInfo]:
        sql = f"SELECT {_TASK_COLUMNS} FROM detflow_tasks"
        params: list[Any] = []
        if state is not None:
            _check_state(state)
            sql += " WHERE state = ?"
            params.append(state)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._transaction() as cur:
            return [_task(r) for r in self._exec(cur, sql, params).fetchall()]

    def _resolve(self, cur: Any, prefix: str) -> str:
        rows = self._exec(cur, "SELECT id FROM detflow_tasks WHERE id LIKE ? ORDER BY seq LIMIT 3",
                          [prefix.replace("%", "").replace("_", "") + "%"]).fetchall()
        if not rows:
            raise ConfigurationError(f"queue {self.location!r}: no task {prefix!r}; `detflow queue list` shows them")
        if len(rows) > 1 and rows[0][0] != prefix:
            raise ConfigurationError(f"queue {self.location!r}: task id {prefix!r} is ambiguous "
                                     f"({', '.join(r[0] for r in rows)}, ...); give more digits")
        return str(rows[0][0])

    def get(self, task_id: str) -> TaskInfo:
        with self._transaction() as cur:
            tid = self._resolve(cur, task_id)
            row = self._exec(cur, f"SELECT {_TASK_COLUMNS} FROM detflow_tasks WHERE id = ?", [tid]).fetchone()
            attempts = tuple(
                Attempt(int(a[0]), a[1], a[2], a[3], a[4], a[5], a[6]) for a in self._exec(
                    cur, "SELECT number, worker_id, started, ended, outcome, error, traceback "
                         "FROM detflow_attempts WHERE task_id = ? ORDER BY number", [tid]).fetchall())
        return _task(row, attempts)

    def attempts(self) -> Iterator[tuple[str, Attempt]]:
        """Every attempt of every task, as ``(task_id, attempt)``, in the order they started."""
        with self._transaction() as cur:
            rows = self._exec(cur, "SELECT task_id, number, worker_id, started, ended, outcome, error, traceback "
                                   "FROM detflow_attempts ORDER BY started, task_id").fetchall()
        for r in rows:
            yield r[0], Attempt(int(r[1]), r[2], r[3], r[4], r[5], r[6], r[7])

    def __enter__(self) -> SQLQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.location!r}>"


def _check_state(state: str) -> None:
    if state not in STATES:
        raise ConfigurationError(f"unknown task state {state!r}; states: {', '.join(STATES)}")
