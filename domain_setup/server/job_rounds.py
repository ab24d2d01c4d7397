"""One round of an approved federated job at this hospital, decided by the domain alone.

The researcher asks for round r (attempt a) of the job her request carries and relays
the partial sums of round r-1 with their aggregators' tags. The domain:

1. checks the job: its request is approved (once, as a whole) and is a federated job
   kind of this researcher; it runs (not stopped by an admin, rounds left); r is the
   next round, or the round last started here retried with a higher attempt;
2. computes round r's global model itself: the request's initial weights for round 1,
   else the relayed partial sums of a round-(r-1) attempt this hospital aggregated,
   each tag checked (`common.federated_job.check_partial_sums`), stepped by the job's
   strategy from the state this hospital kept;
3. trains in the sandbox exactly as an approved ``secure_train`` request would (the
   members, the total, the round's model, the privacy charge per round, the queue, the
   output contract, the release filter: `PlanExecutor.execute`), in the round
   `round_spec` derives from the job, and releases the sealed shares;
4. aggregates that round when asked, once, and tags its partial sum for every member.

Everything is audited per round (``job.round``, ``job.aggregate``, ``job.stop``); a
refusal is a `JobRefused` with the researcher's one line.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from typing import Any, Callable

from common import syft_compat
from common.aggregation import RoundSpec
from common.errors import SharingError
from common.federated_job import (MAX_ATTEMPTS, check_partial_sums, next_global, round_config,
                                  round_spec, tag_partial_sum)
from common.strategies import strategy_from_constant
from common.syft_requests import request_status
from domain_setup.sandbox import SandboxError
from domain_setup.server.execution import RunFailed, Withheld
from domain_setup.server.job_ledger import JobLedger, JobRecord
from domain_setup.vetting.registry import PlanKind, code_sha256, identify

log = logging.getLogger("pneumosyft.jobs")
ROUND_KEYS = {"round", "attempt", "previous"}
PREVIOUS_KEYS = {"attempt", "partial_sums", "tags"}


class JobRefused(Exception):
    """A job round this domain will not run, with its status and the researcher's line."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class JobRounds:
    """The job routes' decisions (see the module docstring). A job's rounds run one at a
    time at this hospital, in two sandbox sessions per job (`SandboxSession`: the job's
    code is the catalogue's), one training and one (numpy only) aggregating, so that a
    round starts no interpreter; both closed when the job ends, stops, fails a round, or
    has been idle for `IDLE_SECONDS`."""

    IDLE_SECONDS = 300

    def __init__(self, *, worker: Any, executor: Any, jobs: JobLedger, audit: Any,
                 private_key: Callable[[], bytes | None]):
        self.worker, self.executor, self.jobs, self.audit = worker, executor, jobs, audit
        self.private_key = private_key
        self._lock = threading.Lock()
        self._job_locks: dict[str, threading.Lock] = {}
        # (request id, aggregating?) -> (session, last use)
        self._sessions: dict[tuple[str, bool], tuple[Any, float]] = {}
        self._reaper: threading.Thread | None = None

    # --- the researcher's side -------------------------------------------------------

    def train(self, request_id: str, email: str, body: Any) -> dict:
        """Run round ``body["round"]`` of the job; what the round releases, with its number."""
        with self._job_lock(request_id):  # one round at a time: the turn checked and taken
            return self._train(request_id, email, body)

    def _train(self, request_id: str, email: str, body: Any) -> dict:
        where = {"target": request_id}
        try:
            code, kind, constants = self._approved_job(request_id, email)
            job = constants["job"]
            where["job"] = job["job_id"]
            number, attempt, previous = _round_request(body)
            where.update(round=str(number), attempt=str(attempt))
            record = self.jobs.open(request_id, job_id=job["job_id"], requester=email,
                                    kind=kind.name, rounds=job["rounds"])
            self._check_turn(record, number, attempt)
            weights, strategy = self._global_model(record, constants, number, previous)
        except (JobRefused, ValueError) as exc:
            refusal = exc if isinstance(exc, JobRefused) else JobRefused(409, str(exc))
            self.audit.record(email, "job.round", outcome="refused", reason=refusal.reason,
                              **where)
            raise refusal from None
        config = round_config(constants["config"], number)
        spec = round_spec(job, constants["config"], round_number=number, attempt=attempt,
                          global_weights=weights)
        self.jobs.started(request_id, round_number=number, attempt=attempt,
                          spec=spec.to_constant())
        round_job = dict(job, round=spec.to_constant())
        if strategy.needs_control:  # SCAFFOLD: c as of this round, and this hospital's c_i
            round_job["control"] = {"server": strategy.control,
                                    "client": self.jobs.load_client_control(request_id, number)}
        inputs = dict(syft_compat.code_inputs(self.worker, code), config=config,
                      initial_weights=weights, job=round_job)
        kept: dict = {}
        self.audit.record(email, "job.round", **where, model=spec.model[:16])
        session = self._session(request_id, rounds_left=job["rounds"] - number + 1)
        try:
            released = self.executor.execute(
                kind, code.raw_code, inputs, requester=email,
                run_id=f"{code.id.no_dash}-r{number}-a{attempt}", credentials=code.user_verify_key,
                dataset=self.executor.dataset_of(code), job_of=str(code.id.no_dash),
                details={"requester": email, "function": code.service_func_name,
                         "plan": kind.name, "code_sha256": code_sha256(code.raw_code),
                         "job": job["job_id"], "round": str(number)}, session=session,
                kept=kept)
        except RunFailed as exc:
            self._close_session(request_id)
            raise JobRefused(409, str(exc)) from None
        if kept.get("client_control") is not None:
            self.jobs.save_client_control(request_id, number + 1, kept["client_control"])
        if number == job["rounds"]:
            self.jobs.finish(request_id)
        if self.jobs.get(request_id).state != "running":  # done, or stopped meanwhile
            self._close_session(request_id)
        released = dict(released, sealed_shares=[base64.b64encode(sealed).decode()
                                                 for sealed in released["sealed_shares"]])
        return {"round": number, "attempt": attempt, "rounds": job["rounds"],
                "round_spec": spec.to_constant(), "released": released}

    def aggregate(self, request_id: str, email: str, body: Any) -> dict:
        """Aggregate this hospital's share of the round the job last started here; the
        partial sum with one tag per member (base64)."""
        with self._job_lock(request_id):  # a stop closes the sessions between rounds only
            return self._aggregate(request_id, email, body)

    def _job_lock(self, request_id: str) -> threading.Lock:
        """The lock a job's rounds and aggregations at this hospital take in turn."""
        with self._lock:
            return self._job_locks.setdefault(request_id, threading.Lock())

    def _aggregate(self, request_id: str, email: str, body: Any) -> dict:
        if not isinstance(body, dict) or set(body) != {"round", "attempt", "ciphertexts"} \
                or not all(type(body[k]) is int for k in ("round", "attempt")):
            raise JobRefused(400, "body must be {'round': int, 'attempt': int, 'ciphertexts'}")
        _, _, constants = self._approved_job(request_id, email)
        record = self.jobs.get(request_id)
        if record is None or (record.round, record.attempt) != (body["round"], body["attempt"]):
            raise JobRefused(409, f"round {body['round']} attempt {body['attempt']} is not the "
                                  "round this hospital last trained in this job")
        spec = RoundSpec.from_constant(record.spec)
        ciphertexts = _base64_list(body["ciphertexts"], "ciphertexts")
        if len(ciphertexts) != spec.n_parties:
            raise JobRefused(400, f"the round has {spec.n_parties} parties but "
                                  f"{len(ciphertexts)} ciphertexts were sent")
        key = self._key()
        try:
            session = self._session(request_id, rounds_left=record.rounds - record.round + 1,
                                    aggregating=True)
            partial = self.executor.aggregate(spec, ciphertexts, key, email, via_job=True,
                                              session=session)
        except Withheld as exc:
            raise JobRefused(409, str(exc)) from None
        tags = tag_partial_sum(key, spec, partial)
        self.audit.record(email, "job.aggregate", target=request_id,
                          job=constants["job"]["job_id"], round=str(record.round))
        return {"partial_sum": base64.b64encode(partial).decode(),
                "tags": [base64.b64encode(tag).decode() for tag in tags]}

    def status(self, request_id: str, email: str) -> dict:
        """Where the job stands here (its requester, or an admin through `describe`)."""
        record = self.jobs.get(request_id)
        if record is None or record.requester != email:
            raise JobRefused(404, f"no job of yours is request {request_id}")
        return record.to_dict()

    # --- the admin's side ------------------------------------------------------------

    def stop(self, request_id: str, admin: str, reason: str) -> dict:
        """End the job at its next round (audited): a round running now finishes, none
        starts after it. A job approved but not started yet is stopped before its first."""
        record = self.jobs.get(request_id) or self._record_unstarted(request_id)
        if not self.jobs.stop(request_id, reason=f"stopped by the hospital's admin: {reason}"):
            raise JobRefused(409, f"job {record.job_id} has ended already ({record.state})")
        self._close_session_between_rounds(request_id)
        self.audit.record(admin, "job.stop", target=request_id, job=record.job_id,
                          round=str(record.round), reason=reason)
        return self.jobs.get(request_id).to_dict()

    def _record_unstarted(self, request_id: str) -> JobRecord:
        """The ledger entry of an approved job that has not run a round here yet."""
        code = syft_compat.request_code(self.worker, request_id)
        kind = identify(code.raw_code) if code is not None else None
        if kind is None or not kind.job:
            raise JobRefused(404, f"request {request_id} is no federated job of this domain")
        job = _constants(code)["job"]
        return self.jobs.open(request_id, job_id=job["job_id"], kind=kind.name,
                              requester=syft_compat.email_of(self.worker, code.user_verify_key),
                              rounds=job["rounds"])

    def describe(self) -> list[dict]:
        """Every job on this domain, newest change first."""
        return [record.to_dict() for record in self.jobs.all()]

    # --- the job's sandbox session ----------------------------------------------------

    def _session(self, request_id: str, *, rounds_left: int, aggregating: bool = False) -> Any:
        """The job's live training (or aggregating) sandbox session, or a new one for its
        remaining rounds (None when none can start: the round then runs in a fresh sandbox,
        and says why if it fails)."""
        key = (request_id, aggregating)
        with self._lock:
            session, _ = self._sessions.get(key, (None, 0.0))
        if session is None or not session.alive:
            limits = self.executor.limits()
            try:
                session = self.executor.sandbox_factory(limits, light=aggregating).session(
                    runs=max(1, rounds_left))
            except SandboxError as exc:
                log.error("no sandbox session for job %s: %s", request_id, exc)
                return None
        with self._lock:
            self._sessions[key] = (session, time.monotonic())
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._close_idle, daemon=True,
                                                name="job-sessions")
                self._reaper.start()
        return session

    def _close_session(self, request_id: str) -> None:
        """Close both of the job's sessions."""
        with self._lock:
            sessions = [self._sessions.pop((request_id, aggregating), (None, 0.0))[0]
                        for aggregating in (False, True)]
        for session in sessions:
            if session is not None:
                session.close()

    def _close_session_between_rounds(self, request_id: str) -> None:
        """Close the job's session unless a round runs in it now (that round's end closes
        it when the job has stopped)."""
        with self._lock:
            job_lock = self._job_locks.get(request_id)
        if job_lock is None:
            self._close_session(request_id)
        elif job_lock.acquire(blocking=False):
            try:
                self._close_session(request_id)
            finally:
                job_lock.release()

    def _close_idle(self) -> None:
        while True:
            time.sleep(min(30.0, self.IDLE_SECONDS))
            now = time.monotonic()
            with self._lock:
                idle = {r for (r, _), (_, used) in self._sessions.items()
                        if now - used > self.IDLE_SECONDS}
            for request_id in idle:
                self._close_session_between_rounds(request_id)

    # --- decisions -------------------------------------------------------------------

    def _approved_job(self, request_id: str, email: str) -> tuple[Any, PlanKind, dict]:
        request = syft_compat.request_of(self.worker, request_id)
        code = syft_compat.request_code(self.worker, request_id) if request else None
        if code is None or syft_compat.email_of(self.worker, code.user_verify_key) != email:
            raise JobRefused(404, f"no request {request_id} of yours on this domain")
        kind = identify(code.raw_code)
        if not kind.job:
            raise JobRefused(409, f"request {request_id} is a {kind.name} request, not a "
                                  "federated job")
        if request_status(request) != "approved":
            raise JobRefused(409, f"request {request_id} is {request_status(request)}: a job "
                                  "runs once its request is approved")
        return code, kind, _constants(code)

    def _key(self) -> bytes:
        key = self.private_key()
        if key is None:
            raise JobRefused(409, "this hospital is not an aggregation party "
                                  "(`federation enable` first)")
        return key

    def _check_turn(self, record: JobRecord, number: int, attempt: int) -> None:
        if record.state == "stopped":
            raise JobRefused(409, f"job {record.job_id} has ended: {record.reason}")
        if number > record.rounds:
            raise JobRefused(409, f"job {record.job_id} was approved for {record.rounds} rounds; "
                                  f"round {number} is beyond it")
        if record.state == "done" and not (number == record.round and attempt > record.attempt):
            raise JobRefused(409, f"job {record.job_id} has run its {record.rounds} rounds")
        if number == record.round + 1:
            return
        if number == record.round and attempt > record.attempt:
            last = RoundSpec.from_constant(record.spec).round_id if record.spec else None
            if last is not None and self.executor.rounds.state(last) == "released":
                raise JobRefused(409, f"round {number} (attempt {record.attempt}) was aggregated "
                                      "here already: a round is retried only when it broke "
                                      "before this hospital released its partial sum")
            return  # a retry of a round that broke before its aggregation here
        expected = (f"round {record.round + 1}" + (f" (or round {record.round} with an attempt "
                    f"above {record.attempt})" if record.round else ""))
        raise JobRefused(409, f"job {record.job_id} is at round {record.round} here: the next "
                              f"is {expected}, not round {number} attempt {attempt}")

    def _global_model(self, record: JobRecord, constants: dict, number: int,
                      previous: dict | None) -> tuple[dict, Any]:
        """Round `number`'s global model, computed (and kept) here, and the job's strategy
        with the server state that came with it (SCAFFOLD's c among it)."""
        strategy = strategy_from_constant(constants["job"]["strategy"])
        if record.model_round == number:
            weights, state = self.jobs.load_model(record.request_id)
            strategy.load_state_arrays(state)
            return weights, strategy
        if number == 1:
            weights = dict(constants.get("initial_weights") or {})
            self.jobs.save_model(record.request_id, 1, weights, strategy.state_arrays())
            return weights, strategy
        if previous is None:
            raise JobRefused(400, f"round {number} needs the partial sums of round {number - 1}")
        current, state = self.jobs.load_model(record.request_id)
        strategy.load_state_arrays(state)
        last = round_spec(constants["job"], constants["config"], round_number=number - 1,
                          attempt=previous["attempt"], global_weights=current)
        if self.executor.rounds.state(last.round_id) != "released":
            raise JobRefused(409, f"this hospital did not aggregate attempt "
                                  f"{previous['attempt']} of round {number - 1}")
        try:
            check_partial_sums(self._key(), last, previous["partial_sums"],
                               previous["tags"])
        except SharingError as exc:
            raise JobRefused(409, f"round {number} refused: {exc}") from None
        weights = next_global(strategy, current, previous["partial_sums"])
        self.jobs.save_model(record.request_id, number, weights, strategy.state_arrays())
        return weights, strategy

def _constants(code: Any) -> dict:
    return syft_compat.code_constants(code)


def _round_request(body: Any) -> tuple[int, int, dict | None]:
    """(round, attempt, previous round's partial sums and tags) of a round request."""
    if not isinstance(body, dict) or not {"round", "attempt"} <= set(body) <= ROUND_KEYS:
        raise JobRefused(400, "body must be {'round': int, 'attempt': int, 'previous': "
                              "{'attempt', 'partial_sums', 'tags'}} (no other field: the "
                              "domain computes the global model itself)")
    number, attempt = body["round"], body["attempt"]
    for name, value, high in (("round", number, 10**6), ("attempt", attempt, MAX_ATTEMPTS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise JobRefused(400, f"{name} must be an integer from 1 to {high}")
    previous = body.get("previous")
    if previous is None:
        return number, attempt, None
    if not isinstance(previous, dict) or set(previous) != PREVIOUS_KEYS:
        raise JobRefused(400, "previous must be {'attempt', 'partial_sums', 'tags'}")
    if isinstance(previous["attempt"], bool) or not isinstance(previous["attempt"], int) \
            or not 1 <= previous["attempt"] <= MAX_ATTEMPTS:
        raise JobRefused(400, f"previous.attempt must be an integer from 1 to {MAX_ATTEMPTS}")
    return number, attempt, {"attempt": previous["attempt"],
                             "partial_sums": _base64_list(previous["partial_sums"],
                                                          "previous.partial_sums"),
                             "tags": _base64_list(previous["tags"], "previous.tags")}


def _base64_list(value: Any, what: str) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise JobRefused(400, f"{what} must be a list of base64 strings")
    try:
        return [base64.b64decode(v, validate=True) for v in value]
    except (binascii.Error, ValueError):
        raise JobRefused(400, f"{what} holds something that is not base64") from None
