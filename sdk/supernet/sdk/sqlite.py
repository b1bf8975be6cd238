"""A durable SQLite connection shared by the node's and the validator's state stores.

WAL journal, ``synchronous=FULL`` (the commit is on disk when ``COMMIT`` returns, which is what
"persisted before acknowledged" needs), explicit ``BEGIN IMMEDIATE`` write transactions, and one
re-entrant lock so threads (``asyncio.to_thread`` workers) can share the connection.

>>> db = DurableSQLite(":memory:", "CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT);")
>>> with db.transaction() as conn:
...     _ = conn.execute("INSERT INTO t VALUES ('a', '1')")
>>> db.all("SELECT v FROM t WHERE k = ?", ("a",))[0][0]
'1'
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class DurableSQLite:
    """One connection with durable write transactions.

    Args:
        path: the database file (its folder is created), or ``:memory:`` for tests.
        schema: SQL run on open (``CREATE TABLE IF NOT EXISTS ...``).
        row_factory: e.g. ``sqlite3.Row`` for rows by column name; tuples by default.
    """

    def __init__(self, path: str | Path, schema: str, *, row_factory: Any = None) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        if row_factory is not None:
            self._conn.row_factory = row_factory
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(schema)
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed durably on exit, rolled back on error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def all(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        """Every row of one read query."""
        with self._lock:
            return list(self._conn.execute(sql, args).fetchall())

    def close(self) -> None:
        """Close the connection (an open transaction is rolled back by SQLite)."""
        with self._lock:
            self._conn.close()
