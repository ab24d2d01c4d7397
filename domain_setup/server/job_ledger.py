"""The federated jobs this domain runs: where each stands, and the global model it is at.

A job is an approved ``federated_job`` request (`domain_setup.vetting.kinds`). The ledger
keeps, per request: the job's shared id, its requester and its bound on rounds; the
round and attempt this hospital last started, with that round's spec (what its
aggregation must name); whether it runs, was stopped by an admin (and why), or ended;
and in ``jobs/<request id>.npz`` the round's global model and the strategy's server
state, both computed by this hospital (`common.federated_job`). One SQLite file and one
0600 file per job in the state directory, durable across restarts: a job resumes where
the ledger says.

    jobs = JobLedger.of_state(state.root)
    jobs.open(request_id, job_id=..., requester="ada@…", kind="federated_job", rounds=20)
    job = jobs.get(request_id)            # JobRecord, or None
    jobs.started(request_id, round_number=3, attempt=1, spec=spec.to_constant())
    jobs.save_model(request_id, 3, weights, strategy.state_arrays())
    jobs.stop(request_id, by="owner@…", reason="enough")
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.secure_files import ensure_private_dir, write_bytes_atomic
from domain_setup.server.sqlite_store import SqliteStore

LEDGER_FILE = "jobs.sqlite3"
MODELS_DIR = "jobs"


@dataclass(frozen=True)
class JobRecord:
    """One job as this hospital sees it."""

    request_id: str
    job_id: str
    requester: str
    kind: str
    rounds: int
    state: str              # running, stopped, done
    round: int              # the round last started here (0: none yet)
    attempt: int
    spec: dict | None       # that round's spec (its aggregation must name it)
    model_round: int        # the round whose global model is saved (0: none yet)
    reason: str
    updated_at: float

    def to_dict(self) -> dict:
        return {"request_id": self.request_id, "job_id": self.job_id,
                "requester": self.requester, "kind": self.kind, "rounds": self.rounds,
                "state": self.state, "round": self.round, "attempt": self.attempt,
                "reason": self.reason, "updated_at": self.updated_at}


class JobLedger(SqliteStore):
    """Federated jobs by request id (see the module docstring)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS jobs (
        request_id TEXT PRIMARY KEY, job_id TEXT NOT NULL UNIQUE, requester TEXT NOT NULL,
        kind TEXT NOT NULL, rounds INTEGER NOT NULL, state TEXT NOT NULL,
        round INTEGER NOT NULL DEFAULT 0, attempt INTEGER NOT NULL DEFAULT 0, spec TEXT,
        model_round INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '',
        updated_at REAL NOT NULL);
    """
    COLUMNS = ("request_id, job_id, requester, kind, rounds, state, round, attempt, spec, "
               "model_round, reason, updated_at")

    @classmethod
    def of_state(cls, state_root: str | os.PathLike) -> "JobLedger":
        ledger = cls(Path(state_root) / LEDGER_FILE)
        ledger.models = ensure_private_dir(Path(state_root) / MODELS_DIR)
        return ledger

    def open(self, request_id: str, *, job_id: str, requester: str, kind: str,
             rounds: int) -> JobRecord:
        """The job of `request_id`, recorded on its first round (ValueError when another
        approved request already runs a job with this job id here)."""
        with self._transaction() as db:
            row = db.execute("SELECT request_id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row and row[0] != request_id:
                raise ValueError(f"job {job_id} already runs here under another request: a "
                                 "job needs a new id")
            if row is None:
                db.execute("INSERT INTO jobs (request_id, job_id, requester, kind, rounds, "
                           "state, updated_at) VALUES (?, ?, ?, ?, ?, 'running', ?)",
                           (request_id, job_id, requester, kind, rounds, time.time()))
        return self.get(request_id)

    def get(self, request_id: str) -> JobRecord | None:
        with self._connection() as db:
            row = db.execute(f"SELECT {self.COLUMNS} FROM jobs WHERE request_id = ?",
                             (request_id,)).fetchone()
        return _record(row) if row else None

    def all(self) -> list[JobRecord]:
        """Every job, newest change first."""
        with self._connection() as db:
            rows = db.execute(f"SELECT {self.COLUMNS} FROM jobs ORDER BY updated_at DESC"
                              ).fetchall()
        return [_record(row) for row in rows]

    def started(self, request_id: str, *, round_number: int, attempt: int, spec: dict) -> None:
        """This hospital starts (`round_number`, `attempt`) of the job, in `spec`'s round."""
        self._update(request_id, "round = ?, attempt = ?, spec = ?",
                     (round_number, attempt, json.dumps(spec)))

    def stop(self, request_id: str, *, reason: str) -> bool:
        """End the job at its next round (an admin's stop); False if it had ended already."""
        return self._update(request_id, "state = 'stopped', reason = ?", (reason,),
                            only_if="state IN ('running', 'done')")

    def finish(self, request_id: str) -> None:
        """The job trained its last round here (a stop that came meanwhile stays)."""
        self._update(request_id, "state = 'done'", (), only_if="state = 'running'")

    def _update(self, request_id: str, assignments: str, values: tuple,
                only_if: str = "1") -> bool:
        with self._transaction() as db:
            changed = db.execute(f"UPDATE jobs SET {assignments}, updated_at = ? "
                                 f"WHERE request_id = ? AND {only_if}",
                                 (*values, time.time(), request_id)).rowcount
        return changed > 0

    # --- the global model this hospital computed ------------------------------------

    def save_model(self, request_id: str, round_number: int, weights: dict,
                   strategy_state: dict) -> None:
        """Keep round `round_number`'s global model and the strategy state after it."""
        arrays = {f"w/{name}": np.asarray(v) for name, v in weights.items()}
        arrays.update({f"s/{name}": np.asarray(v) for name, v in strategy_state.items()})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_bytes_atomic(self._model_path(request_id), buffer.getvalue())
        self._update(request_id, "model_round = ?", (round_number,))

    def load_model(self, request_id: str) -> tuple[dict, dict]:
        """(global weights, strategy state) as `save_model` kept them."""
        with np.load(self._model_path(request_id), allow_pickle=False) as data:
            weights = {k[2:]: data[k] for k in data.files if k.startswith("w/")}
            state = {k[2:]: data[k] for k in data.files if k.startswith("s/")}
        return weights, state

    def save_client_control(self, request_id: str, round_number: int, control: dict) -> None:
        """Keep this hospital's SCAFFOLD control variate as it enters `round_number` (a
        retried round starts again from the one that entered it); older ones go."""
        buffer = io.BytesIO()
        np.savez(buffer, **{name: np.asarray(v) for name, v in control.items()})
        write_bytes_atomic(self._control_path(request_id, round_number), buffer.getvalue())
        for old in self.models.glob(f"{request_id}.control-*.npz"):
            if int(old.stem.rsplit("-", 1)[1]) < round_number - 1:
                old.unlink(missing_ok=True)

    def load_client_control(self, request_id: str, round_number: int) -> dict:
        """The control variate that entered `round_number` here (none: zeros)."""
        path = self._control_path(request_id, round_number)
        if not path.exists():
            return {}
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def _model_path(self, request_id: str) -> Path:
        return self.models / f"{request_id}.npz"

    def _control_path(self, request_id: str, round_number: int) -> Path:
        return self.models / f"{request_id}.control-{int(round_number)}.npz"


def _record(row: tuple) -> JobRecord:
    values = list(row)
    values[8] = json.loads(values[8]) if values[8] else None
    return JobRecord(*values)
