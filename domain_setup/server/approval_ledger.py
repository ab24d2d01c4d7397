"""How each request's code was approved, and whether it has run: by the rules (a vetted
plan that complies) or by an admin's override with a reason. The dispatch reads it when
the code runs: a field bounded ``trusted`` leaves a dataset that requires DP only where an
admin explicitly trusted this request; and an approval is for one run, claimed before
any data enters the sandbox (syft's single-execution output policy alone let approved
code run again and again). One SQLite file in the state directory, durable across
restarts.

    approvals = ApprovalLedger.of_state(state.root)
    approvals.record(code_id, request_id, approver="owner@…", override_reason="")
    approvals.overridden(code_id)             # False: approved because it complies
    approvals.claim_run(code_id)              # True once; False ever after
    approvals.run_started(code_id)            # it left the queue: data enters its sandbox
    approvals.run_ended(code_id, "done")      # or "failed", "refused"

A run's state is ``queued`` (claimed, waiting for the sandbox queue), ``running``,
then ``done``, ``failed`` or ``refused`` (before any data entered); recovery at start
turns what a crash left ``running`` into ``interrupted`` and ``queued`` into ``not run``
(`server/recovery.py`). Either way the approval is used: running the code again is a new
request.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from domain_setup.server.sqlite_store import SqliteStore

LEDGER_FILE = "approvals.sqlite3"


class ApprovalLedger(SqliteStore):
    """Approvals by the id of the code they approved (see the module docstring)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS approvals (
        code_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, approver TEXT NOT NULL,
        override_reason TEXT NOT NULL, at REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS runs (
        code_id TEXT PRIMARY KEY, claimed_at REAL NOT NULL, state TEXT NOT NULL,
        started_at REAL, ended_at REAL);
    CREATE INDEX IF NOT EXISTS runs_state ON runs (state);
    """
    ENDINGS = frozenset({"done", "failed", "refused"})

    @classmethod
    def of_state(cls, state_root: str | os.PathLike) -> "ApprovalLedger":
        return cls(Path(state_root) / LEDGER_FILE)

    def record(self, code_id: str, request_id: str, *, approver: str,
               override_reason: str = "") -> None:
        """Record an approval (an override when `override_reason` is given)."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO approvals VALUES (?, ?, ?, ?, ?)",
                       (code_id, request_id, approver, override_reason, time.time()))

    def approved(self, code_id: str) -> bool:
        """Was the code approved (by the rules or with an override)?"""
        with self._connection() as db:
            return db.execute("SELECT 1 FROM approvals WHERE code_id = ?",
                              (code_id,)).fetchone() is not None

    def overridden(self, code_id: str) -> bool:
        """Was the code approved with an admin's override (explicit trust)?"""
        with self._connection() as db:
            row = db.execute("SELECT override_reason FROM approvals WHERE code_id = ?",
                             (code_id,)).fetchone()
        return bool(row and row[0])

    def claim_run(self, code_id: str) -> bool:
        """Claim the one run of an approval: True the first time, False ever after."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM runs WHERE code_id = ?", (code_id,)).fetchone():
                return False
            db.execute("INSERT INTO runs (code_id, claimed_at, state) VALUES (?, ?, 'queued')",
                       (code_id, time.time()))
        return True

    def run_state(self, code_id: str) -> str | None:
        """The state of the approval's run (None: not claimed)."""
        with self._connection() as db:
            row = db.execute("SELECT state FROM runs WHERE code_id = ?", (code_id,)).fetchone()
        return row[0] if row else None

    def run_started(self, code_id: str) -> None:
        """The run left the queue: private data is about to enter its sandbox."""
        with self._transaction() as db:
            db.execute("UPDATE runs SET state = 'running', started_at = ? WHERE code_id = ?",
                       (time.time(), code_id))

    def run_ended(self, code_id: str, outcome: str) -> None:
        """The run ended: ``done``, ``failed`` (after data entered) or ``refused`` (before)."""
        if outcome not in self.ENDINGS:
            raise ValueError(f"a run ends {sorted(self.ENDINGS)}, not {outcome!r}")
        with self._transaction() as db:
            db.execute("UPDATE runs SET state = ?, ended_at = ? WHERE code_id = ?",
                       (outcome, time.time(), code_id))

    def end_unfinished(self) -> list[tuple[str, str]]:
        """At start: what a crash left ``running`` becomes ``interrupted`` and what it left
        ``queued`` becomes ``not run``; returns (code id, state it was in)."""
        with self._transaction() as db:
            rows = db.execute("SELECT code_id, state FROM runs WHERE state IN "
                              "('running', 'queued') ORDER BY claimed_at").fetchall()
            db.execute("UPDATE runs SET ended_at = ?, state = CASE state WHEN 'running' THEN "
                       "'interrupted' ELSE 'not run' END WHERE state IN ('running', 'queued')",
                       (time.time(),))
        return [(code_id, state) for code_id, state in rows]
