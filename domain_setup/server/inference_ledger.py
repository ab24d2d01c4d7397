"""How many X-rays each image holder has had predicted by each inference service of this
domain: the query budget the admin approved with the service (model-extraction attacks
need many queries). One SQLite file in the state directory; a charge is atomic, so two
queries at once cannot both take the last of a budget.

    ledger = InferenceLedger.of_state(state.root)
    ledger.charge(request_id, "ada@…", images=1, limit=100, query=query_id)  # or QueryRefused
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from domain_setup.server.sqlite_store import SqliteStore

LEDGER_FILE = "inference.sqlite3"


class QueryRefused(Exception):
    """A query past the image holder's budget: the one line she reads."""


class InferenceLedger(SqliteStore):
    """Images predicted per (service request, image holder)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS queries (
        service TEXT NOT NULL, email TEXT NOT NULL, images INTEGER NOT NULL,
        last_at REAL NOT NULL, PRIMARY KEY (service, email));
    CREATE TABLE IF NOT EXISTS query_ids (query TEXT PRIMARY KEY, at REAL NOT NULL);
    """

    @classmethod
    def of_state(cls, state_root: str | os.PathLike) -> "InferenceLedger":
        return cls(Path(state_root) / LEDGER_FILE)

    def charge(self, service: str, email: str, *, images: int, limit: int, query: str) -> int:
        """Count `images` more for `email` on `service` under the query id `query`;
        QueryRefused past `limit`, or for a query id used before (the dealer's masks of a
        query must never serve two: their differences would show the inputs')."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM query_ids WHERE query = ?", (query,)).fetchone():
                raise QueryRefused("this query id was used before: every query needs a new "
                                   "one, and new material from the dealer")
            db.execute("INSERT INTO query_ids VALUES (?, ?)", (query, time.time()))
            row = db.execute("SELECT images FROM queries WHERE service = ? AND email = ?",
                             (service, email)).fetchone()
            used = row[0] if row else 0
            if used + images > limit:
                raise QueryRefused(f"the query budget of this inference service is spent: "
                                   f"{used} of {limit} X-rays used")
            db.execute("INSERT OR REPLACE INTO queries VALUES (?, ?, ?, ?)",
                       (service, email, used + images, time.time()))
        return used + images

    def used(self, service: str, email: str) -> int:
        with self._connection() as db:
            row = db.execute("SELECT images FROM queries WHERE service = ? AND email = ?",
                             (service, email)).fetchone()
        return row[0] if row else 0
