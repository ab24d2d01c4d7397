"""A small SQLite file in the state directory (0600), durable and shared safely across
threads and processes: what the privacy and round ledgers are built on.

    class Ledger(SqliteStore):
        SCHEMA = "CREATE TABLE IF NOT EXISTS t (x INTEGER);"
    with Ledger(path)._transaction() as db:       # BEGIN IMMEDIATE ... COMMIT
        db.execute("INSERT INTO t VALUES (1)")
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BUSY_TIMEOUT_SECONDS = 30


class SqliteStore:
    """One SQLite file created 0600 with `SCHEMA`; writes are ``synchronous=FULL``."""

    SCHEMA = ""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        with self._connection() as db:
            db.executescript(self.SCHEMA)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
