"""The queue on PostgreSQL, for launchers on several machines: ``--queue postgresql://...``.

Same tables and states as the SQLite queue (:mod:`detflow.batch._sql`). Leases pick
their task with ``SELECT ... FOR UPDATE SKIP LOCKED``, so launchers lease concurrently
without waiting on each other and never get the same task; expiry times come from the
server's clock, so launchers on machines whose clocks disagree still agree on them.
Needs psycopg 3: ``pip install 'detflow[postgres]'``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from detflow.batch._sql import SCHEMA_VERSION, SQLQueue
from detflow.batch.base import QueueError
from detflow.errors import MissingDependencyError

__all__ = ["PostgresQueue"]

_SCHEMA_LOCK = 0x64657466  # an advisory lock id, so concurrent launchers create the tables once


class PostgresQueue(SQLQueue):
    """A work queue in the PostgreSQL database at ``url`` (``postgresql://user@host:port/db``)."""

    placeholder = "%s"
    skip_locked = "FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, *, create: bool = True, timeout: float = 30.0) -> None:
        try:
            import psycopg
        except ImportError as err:
            raise MissingDependencyError("psycopg", "postgres", "a PostgreSQL queue") from err
        self._psycopg = psycopg
        self.location = url
        self._url = url
        self._timeout = timeout
        self._lock = threading.RLock()
        self._conn = self._connect()
        try:
            with self._transaction() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                cur.execute("SELECT to_regclass('detflow_meta')")
                if cur.fetchone()[0] is None:
                    if not create:
                        raise QueueError(f"queue {self._safe_url()}: the database holds no detflow queue")
                    for sql in self.schema_statements(real="DOUBLE PRECISION", serial="BIGSERIAL PRIMARY KEY"):
                        cur.execute(sql)
                    cur.execute("INSERT INTO detflow_meta VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),))
                self._check_schema(cur)
        except BaseException:
            self._conn.close()
            raise

    def _safe_url(self) -> str:
        """The URL without its password, for messages."""
        scheme, sep, rest = self._url.partition("://")
        cred, at, host = rest.rpartition("@")
        if at and ":" in cred:
            cred = cred.split(":", 1)[0] + ":***"
        return f"{scheme}{sep}{cred}{at}{host}"

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self._url, connect_timeout=max(1, int(self._timeout)), autocommit=True)
        except self._psycopg.Error as err:
            raise QueueError(f"queue {self._safe_url()}: cannot connect: {str(err).strip()}") from err

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock:
            if self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            try:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur
            except self._psycopg.OperationalError as err:
                raise QueueError(f"queue {self._safe_url()}: {str(err).strip()}") from err

    def _now(self, cur: Any) -> float:
        cur.execute("SELECT extract(epoch FROM clock_timestamp())")
        return float(cur.fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
