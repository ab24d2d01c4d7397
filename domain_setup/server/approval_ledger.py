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
    CREATE TABLE IF NOT EXISTS runs (code_id TEXT PRIMARY KEY, started_at REAL NOT NULL);
    """

    @classmethod
    def of_state(cls, state_root: str | os.PathLike) -> "ApprovalLedger":
        return cls(Path(state_root) / LEDGER_FILE)

    def record(self, code_id: str, request_id: str, *, approver: str,
               override_reason: str = "") -> None:
        """Record an approval (an override when `override_reason` is given)."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO approvals VALUES (?, ?, ?, ?, ?)",
                       (code_id, request_id, approver, override_reason, time.time()))

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
            db.execute("INSERT INTO runs VALUES (?, ?)", (code_id, time.time()))
        return True
