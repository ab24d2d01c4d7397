"""The privacy ledger: every release charged to a (researcher, dataset), and its total ε.

The ledger is one SQLite file in the state directory (0600), written in transactions
with ``synchronous=FULL``, so that it survives a restart and a ``kill -9`` at any
point: a charge is there or it is not. A run is charged when it starts, in one
``BEGIN IMMEDIATE`` transaction that reads what was spent, checks the budget and
writes the charge, so that two runs approved at once cannot both spend the last of a
budget; a run whose result is withheld is refunded (nothing was released).

The total is the RDP composition of every charged release (`common.dp_accounting`),
shown beside the plain sum of their ε, which over-counts.

    ledger = PrivacyLedger(state.root / "privacy.sqlite3")
    ledger.charge("ada@…", "xray", request_id="…", kind="train", mechanism=m, epsilon=3.0,
                  delta=1e-5, budget=10.0)
    ledger.account("ada@…", "xray", delta=1e-5).spent       # 3.0
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from common.dp_accounting import Mechanism, epsilon as composed_epsilon
from common.errors import PneumoSyftError
from domain_setup.server.sqlite_store import SqliteStore

LEDGER_FILE = "privacy.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL, dataset TEXT NOT NULL, request_id TEXT NOT NULL,
    kind TEXT NOT NULL, epsilon REAL NOT NULL, delta REAL NOT NULL,
    mechanism TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS releases_owner ON releases (email, dataset);
CREATE TABLE IF NOT EXISTS grants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL, dataset TEXT NOT NULL, epsilon REAL NOT NULL,
    reason TEXT NOT NULL, granted_by TEXT NOT NULL, at REAL NOT NULL);
"""


# A charge counts while its status is one of these: "charged-interrupted" is a run that
# had private data when a crash stopped it (recovery at start); nothing was released,
# but it may have computed on the data, so its ε stays spent.
CHARGED = ("charged", "charged-interrupted")


class BudgetExceeded(PneumoSyftError):
    """A charge that would take a researcher past their budget on a dataset."""


@dataclass(frozen=True)
class Release:
    """One charged (or refunded) release."""

    id: int
    request_id: str
    kind: str
    epsilon: float
    mechanism: Mechanism
    status: str
    at: float


@dataclass(frozen=True)
class Account:
    """What one researcher has spent on one dataset."""

    email: str
    dataset: str
    spent: float          # RDP composition of the charged releases at the dataset's δ
    spent_sum: float      # the plain sum of their ε (an over-count)
    granted: float        # ε added by `privacy grant`
    releases: tuple[Release, ...]

    def left(self, budget: float) -> float:
        """ε left of `budget` (plus grants)."""
        return max(0.0, budget + self.granted - self.spent)

    @property
    def charged(self) -> tuple[Release, ...]:
        """The releases whose ε counts (`CHARGED`: refunded ones do not)."""
        return charged_of(self.releases)


def charged_of(releases: tuple[Release, ...]) -> tuple[Release, ...]:
    return tuple(r for r in releases if r.status in CHARGED)


class PrivacyLedger(SqliteStore):
    """The domain's ledger (one SQLite file; safe across threads and processes)."""

    SCHEMA = SCHEMA

    @classmethod
    def of_state(cls, state_root: str | os.PathLike) -> "PrivacyLedger":
        """The ledger of the domain whose state directory is `state_root`."""
        return cls(Path(state_root) / LEDGER_FILE)

    # -- writing -------------------------------------------------------------------------
    def charge(self, email: str, dataset: str, *, request_id: str, kind: str,
               mechanism: Mechanism, epsilon: float, delta: float, budget: float) -> Release:
        """Charge one release, or raise BudgetExceeded (nothing written) when the
        composition of what was spent and this release would pass `budget` plus grants."""
        with self._transaction() as db:
            account = self._account(db, email, dataset, delta)
            after = composed_epsilon([r.mechanism for r in account.charged] + [mechanism], delta)
            allowed = budget + account.granted
            if after > allowed + 1e-9:
                raise BudgetExceeded(
                    f"{email} has ε {account.left(budget):.2f} left of {allowed:g} on {dataset}; "
                    f"this {kind} (ε {epsilon:.2f}) would bring the total to {after:.2f}")
            cursor = db.execute(
                "INSERT INTO releases (email, dataset, request_id, kind, epsilon, delta, "
                "mechanism, status, at) VALUES (?, ?, ?, ?, ?, ?, ?, 'charged', ?)",
                (email.lower(), dataset, request_id, kind, float(epsilon), float(delta),
                 json.dumps(mechanism.to_dict()), time.time()))
            return Release(cursor.lastrowid, request_id, kind, float(epsilon), mechanism,
                           "charged", time.time())

    def refund(self, release_id: int, reason: str) -> None:
        """Take back a charge whose result was never released."""
        with self._transaction() as db:
            db.execute("UPDATE releases SET status = 'refunded', reason = ? WHERE id = ? "
                       "AND status = 'charged'", (reason[:300], int(release_id)))

    def refund_request(self, request_id: str, reason: str) -> bool:
        """Refund the charges of a run that never received data (recovery: it was still
        queued); True when there was one."""
        with self._transaction() as db:
            cursor = db.execute("UPDATE releases SET status = 'refunded', reason = ? WHERE "
                                "request_id = ? AND status = 'charged'",
                                (reason[:300], request_id))
        return cursor.rowcount > 0

    def mark_interrupted(self, request_id: str) -> bool:
        """Keep the charges of a run a crash interrupted after data entered, marked so;
        True when there was one."""
        with self._transaction() as db:
            cursor = db.execute("UPDATE releases SET status = 'charged-interrupted', reason = "
                                "'interrupted by a crash: kept' WHERE request_id = ? AND "
                                "status = 'charged'", (request_id,))
        return cursor.rowcount > 0

    def grant(self, email: str, dataset: str, epsilon: float, *, reason: str,
              granted_by: str) -> None:
        """Add `epsilon` to one researcher's budget on `dataset`."""
        if not (epsilon > 0) or not reason.strip():
            raise ValueError("a grant needs a positive ε and a reason")
        with self._transaction() as db:
            db.execute("INSERT INTO grants (email, dataset, epsilon, reason, granted_by, at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (email.lower(), dataset, float(epsilon),
                                                     reason[:300], granted_by, time.time()))

    # -- reading -------------------------------------------------------------------------
    def account(self, email: str, dataset: str, *, delta: float) -> Account:
        """What `email` has spent on `dataset`, composed at `delta`."""
        with self._connection() as db:
            return self._account(db, email, dataset, delta)

    def owners(self) -> list[tuple[str, str]]:
        """Every (email, dataset) with a release or a grant."""
        with self._connection() as db:
            rows = db.execute("SELECT email, dataset FROM releases UNION "
                              "SELECT email, dataset FROM grants ORDER BY 1, 2").fetchall()
        return [(email, dataset) for email, dataset in rows]

    def _account(self, db: sqlite3.Connection, email: str, dataset: str,
                 delta: float) -> Account:
        rows = db.execute("SELECT id, request_id, kind, epsilon, mechanism, status, at "
                          "FROM releases WHERE email = ? AND dataset = ? ORDER BY id",
                          (email.lower(), dataset)).fetchall()
        releases = tuple(Release(i, rid, kind, eps, Mechanism(**json.loads(m)), status, at)
                         for i, rid, kind, eps, m, status, at in rows)
        charged = charged_of(releases)
        (granted,) = db.execute("SELECT COALESCE(SUM(epsilon), 0) FROM grants WHERE email = ? "
                                "AND dataset = ?", (email.lower(), dataset)).fetchone()
        return Account(email.lower(), dataset, composed_epsilon([r.mechanism for r in charged],
                                                                delta),
                       sum(r.epsilon for r in charged), float(granted), releases)
