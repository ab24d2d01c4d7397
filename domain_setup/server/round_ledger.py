"""Which secure-aggregation rounds this domain took part in: one contribution and one
aggregation per round, never more.

A hospital's approved secure-training run contributes to the round its request names
(`RoundSpec`); it is recorded before the run starts, so a second request naming the
same round is refused even if both were approved. The domain aggregates a round only
for the researcher whose run contributed to it, with the very same spec, and only
once: an aggregator cannot be asked to open another set of shares for a round, nor
any shares for a round it did not join. One SQLite file in the state directory.

    rounds = RoundLedger.of_state(state.root)
    rounds.contribute(spec, "ada@…")         # at the start of secure training
    rounds.claim(spec, "ada@…")              # before aggregating; RoundRefused if not
    rounds.released(spec.round_id)           # or rounds.unclaim(...) when it failed
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from common.aggregation import RoundSpec
from common.errors import PneumoSyftError
from domain_setup.server.sqlite_store import SqliteStore

LEDGER_FILE = "rounds.sqlite3"


class RoundRefused(PneumoSyftError):
    """A contribution or aggregation this domain must not make, with its reason."""


def spec_digest(spec: RoundSpec) -> str:
    return hashlib.sha256(json.dumps(spec.to_constant(), sort_keys=True).encode()).hexdigest()


class RoundLedger(SqliteStore):
    """Contributions and aggregations by round id (see the module docstring)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS rounds (
        round_id TEXT PRIMARY KEY, email TEXT NOT NULL, spec_digest TEXT NOT NULL,
        n_parties INTEGER NOT NULL, contributed_at REAL NOT NULL,
        aggregation TEXT NOT NULL DEFAULT 'none', aggregated_at REAL);
    CREATE TABLE IF NOT EXISTS job_rounds (round_id TEXT PRIMARY KEY);
    """

    @classmethod
    def of_state(cls, state_root: str | os.PathLike) -> "RoundLedger":
        return cls(Path(state_root) / LEDGER_FILE)

    def contribute(self, spec: RoundSpec, email: str, *, job: bool = False) -> None:
        """Record this domain's contribution to `spec`'s round (once per round id); a
        `job` round is aggregated only through its job's route."""
        with self._transaction() as db:
            if job:
                db.execute("INSERT OR IGNORE INTO job_rounds VALUES (?)", (spec.round_id,))
            if db.execute("SELECT 1 FROM rounds WHERE round_id = ?",
                          (spec.round_id,)).fetchone():
                raise RoundRefused(f"round {spec.round_id} already has this hospital's "
                                   "contribution; a new round needs a new id")
            db.execute("INSERT INTO rounds (round_id, email, spec_digest, n_parties, "
                       "contributed_at) VALUES (?, ?, ?, ?, ?)",
                       (spec.round_id, email, spec_digest(spec), spec.n_parties, time.time()))

    def claim(self, spec: RoundSpec, email: str, *, via_job: bool = False) -> None:
        """Reserve the round's one aggregation for `email` (RoundRefused if not allowed);
        a federated job's round only `via_job` (its route checks the attempt)."""
        with self._transaction() as db:
            if not via_job and db.execute("SELECT 1 FROM job_rounds WHERE round_id = ?",
                                          (spec.round_id,)).fetchone():
                raise RoundRefused(f"round {spec.round_id} is a federated job's: its job's "
                                   "route aggregates it")
            row = db.execute("SELECT email, spec_digest, aggregation FROM rounds "
                             "WHERE round_id = ?", (spec.round_id,)).fetchone()
            if row is None:
                raise RoundRefused(f"this hospital did not contribute to round {spec.round_id}")
            owner, digest, aggregation = row
            if owner != email:
                raise RoundRefused(f"round {spec.round_id} is another researcher's")
            if digest != spec_digest(spec):
                raise RoundRefused(f"round {spec.round_id} was trained with other parties, "
                                   "another total or another model; the aggregation must name "
                                   "the same round")
            if aggregation != "none":
                raise RoundRefused(f"round {spec.round_id} was already aggregated here"
                                   if aggregation == "released" else
                                   f"round {spec.round_id} is being aggregated")
            db.execute("UPDATE rounds SET aggregation = 'claimed' WHERE round_id = ?",
                       (spec.round_id,))

    def released(self, round_id: str) -> None:
        """The claimed aggregation released its sum: the round is closed here."""
        with self._transaction() as db:
            db.execute("UPDATE rounds SET aggregation = 'released', aggregated_at = ? "
                       "WHERE round_id = ?", (time.time(), round_id))

    def unclaim(self, round_id: str) -> None:
        """The claimed aggregation released nothing (refused inputs): it may be retried."""
        with self._transaction() as db:
            db.execute("UPDATE rounds SET aggregation = 'none' WHERE round_id = ? "
                       "AND aggregation = 'claimed'", (round_id,))

    def state(self, round_id: str) -> str | None:
        """'none' (contributed), 'claimed', 'released', or None (not a round here)."""
        with self._connection() as db:
            row = db.execute("SELECT aggregation FROM rounds WHERE round_id = ?",
                             (round_id,)).fetchone()
        return row[0] if row else None
