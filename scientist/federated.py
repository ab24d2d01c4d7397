"""Federated averaging across hospital domains, plain or with secret-shared weights.

Secure round (K hospitals, each also an aggregator):

1. each hospital trains from the global model, scales its weights by its sample
   count, splits them into K additive shares and seals share j to aggregator j's
   public key; the researcher receives only ciphertexts and the sample count;
2. the researcher uploads the K shares sealed to aggregator j to its domain (an
   object, not request constants: see `upload_input`); aggregator j opens them there
   and releases only their sum (one more approved request);
3. the researcher adds the K partial sums and divides by the total count.

An `approver` callback stands for the hospital admins: it is called with a
hospital and a submission, and must get the request approved (the demo runs
`python -m domain_setup review approve`; a real admin reviews at leisure).
Hospitals are independent, so each step runs at every hospital at once (one
thread per hospital): the researcher waits for the slowest admin, not for the
sum of them. The approver is therefore called from several threads.

    hospitals = [Hospital("A", client_a, admin_a), ...]
    weights, log = run_rounds(hospitals, plan, rounds=3, secure=True, approver=approve)
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from common.aggregation import AGGREGATION_ASSET, AGGREGATION_DATASET
from common.errors import DomainError
from common.secret_sharing import reconstruct_state_dict
from common.wire import loads
from scientist.plans import (
    TrainingPlan,
    aggregate_shares_plan,
    secure_train_xray_plan,
    train_xray_plan,
)
from common.vetted_plans import secure_train_private_xray_plan, train_private_xray_plan
from scientist.submission import (
    Submission,
    find_dataset,
    run_approved,
    split_assets,
    submit_plan,
    upload_input,
)



@dataclass
class Hospital:
    """One hospital as the researcher sees it: a name, a client, a dataset, its public key."""

    name: str
    client: Any
    dataset: str = "xray"
    public_key: str = ""
    aggregation_key: Any = field(default=None, repr=False)  # the key asset, once looked up


@dataclass
class RoundLog:
    """What one round produced: per-hospital sample counts and histories, seconds taken
    (in all, and per phase of a secure round: "train and share", "aggregate")."""

    round: int
    secure: bool
    n_samples: dict = field(default_factory=dict)
    histories: dict = field(default_factory=dict)
    privacy: dict = field(default_factory=dict)  # per hospital, with DP: ε, spent, left
    seconds: float = 0.0
    phases: dict = field(default_factory=dict)


Approver = Callable[[Hospital, Submission], None]


def join(connection_file: str, *, dataset: str = "xray") -> Hospital:
    """Connect to one hospital and fetch its name and aggregation public key."""
    import requests

    from common.connection import HTTP_TIMEOUT, auth_headers, gate_reason
    from scientist.connect import connect, load_connection_file

    details = load_connection_file(connection_file)
    client = connect(connection_file=connection_file)
    response = requests.get(f"{details['url']}/pneumosyft/info",
                            headers=auth_headers(details["token"]), timeout=HTTP_TIMEOUT)
    if response.status_code != 200:
        raise DomainError(f"{details['url']}: {gate_reason(response)}")
    info = response.json()
    if not info.get("aggregation_public_key"):
        raise DomainError(f"{info['name']} is not an aggregation party yet: its admin runs "
                          "`python -m domain_setup federation enable`")
    return Hospital(name=info["name"], client=client, dataset=dataset,
                    public_key=info["aggregation_public_key"])


def _submit_and_run(hospital: Hospital, plan_function: Callable, inputs: dict, constants: dict,
                    reason: str, approver: Approver) -> Any:
    submission = submit_plan(hospital.client, plan_function, inputs=inputs,
                             constants=constants, reason=reason)
    approver(hospital, submission)
    return run_approved(hospital.client, submission)


def at_every_hospital(hospitals: list[Hospital], work: Callable[[Hospital], Any],
                      failure: str = "{name}: {error}") -> list:
    """`work(hospital)` at every hospital concurrently; results in the hospitals' order.

    If any hospital fails, raise one DomainError naming the first that failed, with
    `failure` formatted from its name and error (the others are still waited for).
    """
    with ThreadPoolExecutor(max_workers=max(1, len(hospitals)),
                            thread_name_prefix="hospital") as pool:
        futures = [pool.submit(work, hospital) for hospital in hospitals]
        outcomes = []
        for future in futures:
            try:
                outcomes.append((future.result(), None))
            except Exception as exc:  # reported below, named by hospital
                outcomes.append((None, exc))
    for hospital, (_, error) in zip(hospitals, outcomes):
        if error is not None:
            raise DomainError(failure.format(name=hospital.name, error=error)) from error
    return [result for result, _ in outcomes]


def weighted_average(updates: list[tuple[dict, int]]) -> dict[str, np.ndarray]:
    """Plain federated averaging: sum of n_k * w_k over the total count."""
    total = sum(n for _, n in updates)
    if total <= 0:
        raise DomainError("no samples in this round")
    names = updates[0][0].keys()
    return {name: (sum(w[name].astype(np.float64) * n for w, n in updates) / total
                   ).astype(np.float32) for name in names}


def _with_privacy(constants: dict, privacy: dict | None) -> dict:
    return dict(constants, privacy=privacy) if privacy else constants


def plain_round(hospitals: list[Hospital], plan: TrainingPlan, weights: dict,
                approver: Approver, round_number: int,
                privacy: dict | None = None) -> tuple[dict, RoundLog]:
    """One FedAvg round in which the researcher sees every hospital's weights (DP-SGD
    inside each hospital when `privacy` is given: `scientist.privacy.private_training`)."""
    log = RoundLog(round=round_number, secure=False)
    started = time.perf_counter()

    def train_at(hospital: Hospital) -> dict:
        return _submit_and_run(
            hospital, train_private_xray_plan if privacy else train_xray_plan,
            split_assets(hospital.client, hospital.dataset, "train"),
            _with_privacy({"config": plan.config(), "initial_weights": weights}, privacy),
            f"federated round {round_number} (plain averaging)", approver)

    results = at_every_hospital(hospitals, train_at)
    updates = []
    for hospital, result in zip(hospitals, results):
        updates.append((result["weights"], int(result["n_samples"])))
        log.n_samples[hospital.name] = int(result["n_samples"])
        log.histories[hospital.name] = result["history"]
        if "privacy" in result:
            log.privacy[hospital.name] = result["privacy"]
    log.seconds = time.perf_counter() - started
    return weighted_average(updates), log


def aggregation_inputs(hospital: Hospital) -> dict:
    """The hospital's private aggregation key asset, the input of `aggregate_shares_plan`
    (looked up once per hospital: the key does not change while its domain runs)."""
    if hospital.aggregation_key is None:
        dataset = find_dataset(hospital.client, AGGREGATION_DATASET)
        hospital.aggregation_key = dataset.assets[AGGREGATION_ASSET]
    return {"aggregation_key": hospital.aggregation_key}


def secure_round(hospitals: list[Hospital], plan: TrainingPlan, weights: dict,
                 approver: Approver, round_number: int,
                 privacy: dict | None = None) -> tuple[dict, RoundLog]:
    """One FedAvg round in which weights leave each hospital only as sealed shares (with
    DP-SGD inside each hospital, each charging its own ledger, when `privacy` is given)."""
    missing = [h.name for h in hospitals if not h.public_key]
    if missing:
        raise DomainError(f"no aggregation public key for {', '.join(missing)}")
    log = RoundLog(round=round_number, secure=True)
    started = time.perf_counter()
    keys = [h.public_key for h in hospitals]

    def train_and_share_at(hospital: Hospital) -> dict:
        result = _submit_and_run(
            hospital, secure_train_private_xray_plan if privacy else secure_train_xray_plan,
            split_assets(hospital.client, hospital.dataset, "train"),
            _with_privacy({"config": plan.config(), "initial_weights": weights,
                           "aggregator_keys": {"public_keys": keys}}, privacy),
            f"federated round {round_number} (secure aggregation)", approver)
        if len(result["sealed_shares"]) != len(hospitals):
            raise DomainError(f"returned {len(result['sealed_shares'])} shares, "
                              f"expected {len(hospitals)}")
        return result

    trained = at_every_hospital(hospitals, train_and_share_at)
    log.phases["train and share"] = time.perf_counter() - started
    for hospital, result in zip(hospitals, trained):
        log.n_samples[hospital.name] = int(result["n_samples"])
        log.histories[hospital.name] = result["history"]
        if "privacy" in result:
            log.privacy[hospital.name] = result["privacy"]

    def release_partial_sum_at(aggregator: Hospital) -> dict:
        j = next(i for i, hospital in enumerate(hospitals) if hospital is aggregator)
        addressed = [result["sealed_shares"][j] for result in trained]
        inputs = dict(aggregation_inputs(aggregator),
                      sealed_shares=upload_input(aggregator.client, {"ciphertexts": addressed}))
        result = _submit_and_run(aggregator, aggregate_shares_plan, inputs, {},
                                 f"release the sum of round {round_number}'s shares", approver)
        return loads(result["partial_sum"])

    partial_sums = at_every_hospital(
        hospitals, release_partial_sum_at,
        failure=f"aggregator {{name}} dropped out of round {round_number}: {{error}}; "
                "the round cannot complete")
    total = sum(log.n_samples.values())
    summed = reconstruct_state_dict(partial_sums)
    average = {name: (value / total).astype(np.float32) for name, value in summed.items()}
    log.seconds = time.perf_counter() - started
    log.phases["aggregate"] = log.seconds - log.phases["train and share"]
    return average, log


def run_rounds(hospitals: list[Hospital], plan: TrainingPlan, *, rounds: int, secure: bool,
               approver: Approver, initial_weights: dict | None = None,
               on_round: Callable[[dict, RoundLog], None] | None = None,
               privacy: dict | None = None) -> tuple[dict, list]:
    """Several rounds, each starting from the last global model; with `privacy`, every
    hospital trains with DP-SGD and charges its own ledger each round."""
    if int(rounds) < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    weights = dict(initial_weights or {})
    logs = []
    step = secure_round if secure else plain_round
    for r in range(1, rounds + 1):
        weights, log = step(hospitals, plan, weights, approver, r, privacy)
        logs.append(log)
        if on_round:
            on_round(weights, log)
    return weights, logs
