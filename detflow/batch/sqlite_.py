"""The embedded queue: one SQLite file in WAL mode, nothing to start.

Several processes (and machines sharing a local disk, not a network file system) may
open the same file: every change is one ``BEGIN IMMEDIATE`` transaction, so writers take
turns and readers never block. ``synchronous=NORMAL`` with WAL survives a killed
process with nothing lost (a power cut may lose the last transactions, never corrupt
the file). See :mod:`detflow.batch._sql` for the tables and :mod:`detflow.batch.base`
for the states.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

from detflow.batch._sql import SCHEMA_VERSION, SQLQueue
from detflow.batch.base import QueueError

__all__ = ["SQLiteQueue"]

_HINT = "give --queue a new file name, or the path of a queue that detflow made"


class SQLiteQueue(SQLQueue):
    """A work queue in the SQLite file ``path`` (created if missing, unless ``create=False``).

    Examples
    --------
    >>> import os, tempfile
    >>> q = SQLiteQueue(os.path.join(tempfile.mkdtemp(), "runs.db"))
    >>> len(q.enqueue([{"input": "a.hdr"}, {"input": "b.hdr"}]).added)
    2
    >>> len(q.enqueue([{"input": "a.hdr"}]).added)     # the same work again adds nothing
    0
    >>> lease = q.lease("w1", visibility_timeout=30)
    >>> lease.payload, q.complete(lease), q.counts()["done"]
    ({'input': 'a.hdr'}, True, 1)
    >>> q.close()
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, timeout: float = 60.0) -> None:
        self.location = os.fspath(path)
        self._lock = threading.RLock()
        if os.path.isdir(self.location):
            raise QueueError(f"queue {self.location!r}: is a folder, not a queue file; {_HINT}")
        exists = os.path.exists(self.location)
        if not exists and not create:
            raise QueueError(f"queue {self.location!r}: no such file")
        if exists and not os.access(self.location, os.R_OK | os.W_OK):
            raise QueueError(f"queue {self.location!r}: cannot be read and written (permission denied)")
        try:
            self._conn = sqlite3.connect(self.location, timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as err:
            raise QueueError(f"queue {self.location!r}: cannot be opened: {err}; {_HINT}") from err
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise QueueError(f"queue {self.location!r}: cannot switch to WAL mode (got {mode!r}); "
                                 "the file system may not support it")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            with self._transaction() as cur:
                tables = {r[0] for r in cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "detflow_meta" not in tables:
                    if tables:
                        raise QueueError(f"queue {self.location!r}: a SQLite database, but not a detflow queue "
                                         f"(it holds tables {', '.join(sorted(tables))}); {_HINT}")
                    for sql in self.schema_statements():
                        cur.execute(sql)
                    cur.execute("INSERT INTO detflow_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                    cur.execute("INSERT INTO detflow_meta VALUES ('created', ?)", (repr(time.time()),))
                self._check_schema(cur)
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise QueueError(f"queue {self.location!r}: not a readable SQLite database ({err}); {_HINT}") from err
        except BaseException:
            self._conn.close()
            raise

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise QueueError(f"queue {self.location!r}: cannot start a transaction: {err}") from err
            try:
                yield cur
            except BaseException:
                self._conn.rollback()
                raise
            else:
                try:
                    cur.execute("COMMIT")
                except sqlite3.Error as err:
                    self._conn.rollback()
                    raise QueueError(f"queue {self.location!r}: cannot commit: {err}") from err
            finally:
                cur.close()

    def _now(self, cur: Any) -> float:
        return time.time()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
