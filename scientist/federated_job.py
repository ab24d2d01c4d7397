"""A federated job: one request per hospital, approved once, then rounds without requests.

    job = FederatedJob.submit(hospitals, plan, rounds=20, strategy=make_strategy("fedavgm"))
    job.approve(approver)                # each hospital's admin approves its request once
    weights, logs = job.run()            # the model that validated best, and every round

Each round, every hospital trains from the round's global model and seals its weights
for the round (``POST /pneumosyft/jobs/{request}/rounds``); every hospital aggregates
its shares and tags its partial sum for every member (``.../aggregate``); the next
round's request carries the K partial sums and each hospital's tags, and every hospital
computes the next global model itself (`common.federated_job`). The researcher relays
and reads: the same average (`combine`), stepped by her own copy of the strategy, is the
model she keeps. If a hospital fails mid-round, `run` raises a DomainError naming it;
call `run` again once it is back and the round is retried (a new attempt).
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from common.aggregation import combine
from common.errors import DomainError
from common.federated_job import MAX_ATTEMPTS
from common.strategies import FedAvg, Strategy, describe_constant
from common.vetted_plans import federated_job_private_xray_plan, federated_job_xray_plan
from scientist.federated import (Approver, BestValidated, Hospital, RoundLog, _record, aggregation_inputs,
                                 at_every_hospital, call_domain, new_round)
from scientist.plans import TrainingPlan
from scientist.submission import Submission, split_assets, submit_plan


def _post(hospital: Hospital, path: str, body: dict | None = None) -> dict:
    """One job call to `hospital` (GET without a body), its JSON answer."""
    return call_domain(hospital, "POST" if body is not None else "GET", f"jobs/{path}",
                       body).json()


def _b64(values: list[bytes]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


@dataclass
class FederatedJob:
    """One job across `hospitals` (see the module docstring)."""

    hospitals: list[Hospital]
    config: dict
    job: dict
    strategy: Strategy
    initial_weights: dict
    private: bool = False
    submissions: list[Submission] = field(default_factory=list)
    round: int = 0                 # the last round whose partial sums are in hand
    attempt: int = 1               # the attempt of the round being run
    previous: dict | None = None   # that round's attempt, partial sums and tags by aggregator
    weights: dict = field(default_factory=dict)   # the global model of the next round
    logs: list[RoundLog] = field(default_factory=list)
    best: BestValidated = field(default_factory=BestValidated)

    @classmethod
    def submit(cls, hospitals: list[Hospital], plan: TrainingPlan, *, rounds: int,
               strategy: Strategy | None = None, privacy: dict | None = None,
               initial_weights: dict | None = None, reason: str = "") -> "FederatedJob":
        """Submit the job's request at every hospital (one each, the same job constant)."""
        if int(rounds) < 1:
            raise ValueError(f"rounds must be at least 1, got {rounds}")
        strategy = strategy or FedAvg()
        config = strategy.client_config(plan.config())
        train_assets = at_every_hospital(
            hospitals, lambda h: split_assets(h.client, h.dataset, "train"))
        spec = new_round(hospitals, config, train_assets, initial_weights)
        job = {"job_id": secrets.token_hex(16), "rounds": int(rounds),
               "members": list(spec.public_keys), "total_samples": spec.total_samples,
               "strategy": describe_constant(strategy)}
        self = cls(hospitals, config, job, strategy, dict(initial_weights or {}),
                   private=privacy is not None)
        constants = {"config": config, "initial_weights": self.initial_weights, "job": job}
        if privacy is not None:
            constants["privacy"] = privacy
        function = federated_job_private_xray_plan if privacy else federated_job_xray_plan
        why = reason or (f"federated job {job['job_id']}: up to {rounds} rounds of "
                         f"{strategy.describe()}")

        def submit_at(hospital: Hospital) -> Submission:
            inputs = dict(train_assets[hospitals.index(hospital)], **aggregation_inputs(hospital))
            return submit_plan(hospital.client, function, inputs=inputs, constants=constants,
                               reason=why)

        self.submissions = at_every_hospital(hospitals, submit_at)
        self.weights = dict(self.initial_weights)
        return self

    def approve(self, approver: Approver) -> None:
        """Have each hospital's request approved (`approver` stands for its admin)."""
        at_every_hospital(self.hospitals, lambda h: approver(h, self._submission(h)))

    def status(self) -> list[dict]:
        """Where the job stands at every hospital (round, attempt, state)."""
        return at_every_hospital(self.hospitals,
                                 lambda h: _post(h, self._submission(h).request_id))

    def run(self, *, rounds: int | None = None,
            on_round: Callable[[dict, RoundLog], None] | None = None) -> tuple[dict, list]:
        """Run the job's remaining rounds (at most `rounds` more); return the global model
        the hospitals validated best (the latest without validation) and every round's log."""
        last = self.job["rounds"] if rounds is None else min(self.job["rounds"],
                                                             self.round + int(rounds))
        while self.round < last:
            try:
                log = self._one_round(self.round + 1)
            except DomainError:
                if self.attempt >= MAX_ATTEMPTS:
                    raise
                self.attempt += 1  # the next run retries the round as a new attempt
                raise
            self.logs.append(log)
            if on_round:
                on_round(self.weights, log)
        return self.best.model(self.weights), self.logs

    # --- one round -------------------------------------------------------------------

    def _submission(self, hospital: Hospital) -> Submission:
        return self.submissions[self.hospitals.index(hospital)]

    def _one_round(self, number: int) -> RoundLog:
        log = RoundLog(round=number, secure=True)
        started = time.perf_counter()
        trained_at = self._train_everywhere(number)
        log.phases["train and share"] = time.perf_counter() - started
        for hospital, answer in zip(self.hospitals, trained_at):
            _record(log, hospital, answer["released"])
        spec = trained_at[0]["round_spec"]
        if any(answer["round_spec"] != spec for answer in trained_at):
            raise DomainError(f"round {number}: the hospitals trained in different rounds "
                              "(their global models differ); the job cannot go on")
        shares = [[base64.b64decode(s) for s in answer["released"]["sealed_shares"]]
                  for answer in trained_at]

        def aggregate_at(aggregator: Hospital) -> dict:
            j = self.hospitals.index(aggregator)
            return _post(aggregator, f"{self._submission(aggregator).request_id}/aggregate",
                         {"round": number, "attempt": self.attempt,
                          "ciphertexts": _b64([sealed[j] for sealed in shares])})

        aggregated = at_every_hospital(
            self.hospitals, aggregate_at,
            failure=f"aggregator {{name}} failed in round {number}: {{error}}; run the job "
                    "again once it is back to retry the round")
        partials = [base64.b64decode(a["partial_sum"]) for a in aggregated]
        self.previous = {"attempt": self.attempt, "partial_sums": partials,
                         "tags": [[base64.b64decode(t) for t in a["tags"]] for a in aggregated]}
        self.best.offer(log, self.weights)
        self.weights = self.strategy.next_global(self.weights, combine(partials))
        self.round, self.attempt = number, 1
        log.seconds = time.perf_counter() - started
        log.phases["aggregate"] = log.seconds - log.phases["train and share"]
        return log

    def _train_everywhere(self, number: int) -> list[dict]:
        def train_at(hospital: Hospital) -> dict:
            body: dict[str, Any] = {"round": number, "attempt": self.attempt}
            if self.previous is not None:
                i = self.hospitals.index(hospital)
                body["previous"] = {
                    "attempt": self.previous["attempt"],
                    "partial_sums": _b64(self.previous["partial_sums"]),
                    "tags": _b64([tags[i] for tags in self.previous["tags"]])}
            return _post(hospital, f"{self._submission(hospital).request_id}/rounds", body)

        return at_every_hospital(self.hospitals, train_at,
                                 failure=f"{{name}} failed in round {number}: {{error}}")
