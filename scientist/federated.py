"""Federated averaging across hospital domains, plain or with secret-shared weights.

Secure round (K hospitals, each also an aggregator; `common.aggregation`):

1. the researcher draws a fresh round (`RoundSpec`: random id, the K public keys, the
   total image count, the digest of the config and initial weights every hospital
   trains); each hospital's admin approves its secure-training request,
   which names that round; the hospital trains from the global model, scales its
   weights by n_i / total and seals them as seeded shares: a 32-byte seed to each
   other hospital, one correction share to itself, all authenticated as its own
   contribution to this round; the researcher receives only ciphertexts and n_i;
2. the researcher sends aggregator j the K ciphertexts addressed to it; the domain
   opens them with its fixed aggregation plan, in the sandbox, once per round and
   only for a round it trained in (``POST /pneumosyft/federation/aggregate``: no
   second request to approve), and releases only their sum;
3. the researcher adds the K partial sums: the weighted average.

A `Strategy` (`common.strategies`: FedAvg, FedProx, FedAvgM, FedAdam) turns each
round's average into the next global model; with ``validation_fraction`` in the
plan, every hospital reports aggregate metrics of the model it received on images
it never trains on, and `run_rounds(..., patience=N)` stops when they stop improving.

An `approver` callback stands for the hospital admins: it is called with a
hospital and a submission, and must get the request approved (the demo runs
`python -m domain_setup review approve`; a real admin reviews at leisure).
Hospitals are independent, so each step runs at every hospital at once (one
thread per hospital): the researcher waits for the slowest admin, not for the
sum of them. The approver is therefore called from several threads.

    hospitals = [join("st-mary.json"), join("royal.json"), join("county.json")]
    weights, logs = run_rounds(hospitals, plan, rounds=3, secure=True, approver=approve,
                               strategy=make_strategy("fedavgm"))
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from common.aggregation import (AGGREGATION_ASSET, AGGREGATION_DATASET, RoundSpec, combine,
                                fixed_point_sum, model_digest, scaled_contribution)
from common.errors import DomainError
from common.training import held_out_count
from common.vetted_plans import secure_train_private_xray_plan, train_private_xray_plan
from scientist.plans import TrainingPlan, secure_train_xray_plan, train_xray_plan
from common.strategies import FedAvg, Strategy
from scientist.submission import Submission, find_dataset, run_approved, split_assets, submit_plan

@dataclass
class Hospital:
    """One hospital as the researcher sees it: a name, a client, a dataset, its public key."""

    name: str
    client: Any
    dataset: str = "xray"
    public_key: str = ""
    aggregation_key: Any = field(default=None, repr=False)  # the key asset, once looked up
    url: str = ""
    token: str = field(default="", repr=False)
    members: list = field(default_factory=list, repr=False)  # its admin's federation list


def federation_problems(hospitals: list[Hospital]) -> list[str]:
    """Where the hospitals' own member lists disagree with the round the researcher would
    open: a hospital that does not list another (by its aggregation key), or lists it with
    another TLS certificate than the one this researcher's connection to it pins. The
    parties of a round come from the domains; each domain refuses a round naming a key it
    does not list, and this says so before any training is spent."""
    from common.tls import trusted

    problems = []
    for hospital in hospitals:
        listed = {m["public_key"]: m for m in hospital.members}
        for other in hospitals:
            if other is hospital:
                continue
            member = listed.get(other.public_key)
            if member is None:
                problems.append(f"{hospital.name} does not list {other.name} as a member of its "
                                "federation (its admin adds their card: `federation members "
                                "add CARD-FILE`)")
                continue
            pinned = trusted(other.url)
            if member.get("tls_fingerprint") and pinned and pinned.fingerprint and \
                    pinned.fingerprint != member["tls_fingerprint"]:
                problems.append(f"{hospital.name} lists {other.name} with TLS certificate "
                                f"{member['tls_fingerprint'][:23]}..., but your connection "
                                f"to it pins {pinned.fingerprint[:23]}...")
    return problems


@dataclass
class RoundLog:
    """What one round produced: per-hospital sample counts and histories (none with DP:
    a DP plan releases nothing un-noised), seconds taken (in all, and per phase of a
    secure round: "train and share", "aggregate")."""

    round: int
    secure: bool
    n_samples: dict = field(default_factory=dict)
    histories: dict = field(default_factory=dict)
    privacy: dict = field(default_factory=dict)  # per hospital, with DP: ε, spent, left
    validation: dict = field(default_factory=dict)  # per hospital: metrics of the model sent
    seconds: float = 0.0
    phases: dict = field(default_factory=dict)

    def validation_summary(self) -> dict | None:
        """Sample-weighted loss, accuracy and AUC of the model this round started from,
        over every hospital's held-out images (None without validation)."""
        return weighted_validation(self.validation)


@dataclass
class BestValidated:
    """The global model the hospitals' weighted validation loss rated best so far (a
    round's validation is of the model the round started from)."""

    loss: float | None = None
    weights: dict | None = field(default=None, repr=False)

    def offer(self, log: "RoundLog", weights: dict) -> bool | None:
        """Keep `weights` (the model `log`'s round started from) if it validated best; None
        when the round has no validation loss (or started from the hospitals' fresh model)."""
        summary = log.validation_summary()
        if not summary or summary.get("loss") is None or not weights:
            return None
        if self.loss is not None and summary["loss"] >= self.loss:
            return False
        self.loss, self.weights = summary["loss"], dict(weights)
        return True

    def model(self, fallback: dict) -> dict:
        """The best model, or `fallback` when no round was validated."""
        return self.weights if self.weights is not None else fallback


Approver = Callable[[Hospital, Submission], None]
AGGREGATION_TIMEOUT_SECONDS = 600


def join(connection_file: str, *, dataset: str = "xray") -> Hospital:
    """Connect to one hospital and fetch its name, its aggregation public key and its
    admin's federation member list (the hospitals it runs secure rounds with)."""
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
    members = requests.get(f"{details['url']}/pneumosyft/federation/members",
                           headers=auth_headers(details["token"]), timeout=HTTP_TIMEOUT)
    if members.status_code != 200:
        raise DomainError(f"{details['url']}: {gate_reason(members)}")
    return Hospital(name=info["name"], client=client, dataset=dataset,
                    public_key=info["aggregation_public_key"], url=details["url"],
                    token=details["token"], members=members.json()["members"])


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
    """Plain federated averaging, the sum of w_k x n_k / total, computed the way a secure
    round computes it (`common.aggregation.fixed_point_sum`): a plain and a secure round
    from the same models return the same bits, so a comparison of the two measures
    secure aggregation, not float rounding."""
    total = sum(n for _, n in updates)
    if total <= 0:
        raise DomainError("no samples in this round")
    return fixed_point_sum([scaled_contribution(w, n, total) for w, n in updates])


def weighted_validation(by_hospital: dict) -> dict | None:
    """The hospitals' validation metrics averaged with their held-out image counts."""
    reports = [v for v in by_hospital.values() if v and v.get("n_samples")]
    if not reports:
        return None
    total = sum(v["n_samples"] for v in reports)
    summary = {"n_samples": total}
    for key in ("loss", "accuracy", "auc"):
        if all(v.get(key) is not None for v in reports):
            summary[key] = sum(v[key] * v["n_samples"] for v in reports) / total
    return summary


def _with_privacy(constants: dict, privacy: dict | None) -> dict:
    return dict(constants, privacy=privacy) if privacy else constants


def _record(log: RoundLog, hospital: Hospital, result: dict) -> None:
    log.n_samples[hospital.name] = int(result["n_samples"])
    for key, into in (("history", log.histories), ("privacy", log.privacy),
                      ("validation", log.validation)):
        if key in result:
            into[hospital.name] = result[key]


def plain_round(hospitals: list[Hospital], plan: TrainingPlan, weights: dict,
                approver: Approver, round_number: int,
                privacy: dict | None = None, config: dict | None = None
                ) -> tuple[dict, RoundLog]:
    """One round in which the researcher sees every hospital's weights; returns their
    weighted average (DP-SGD inside each hospital when `privacy` is given:
    `scientist.privacy.private_training`; `config` overrides the plan's)."""
    log = RoundLog(round=round_number, secure=False)
    started = time.perf_counter()

    def train_at(hospital: Hospital) -> dict:
        return _submit_and_run(
            hospital, train_private_xray_plan if privacy else train_xray_plan,
            split_assets(hospital.client, hospital.dataset, "train"),
            _with_privacy({"config": config or plan.config(), "initial_weights": weights},
                          privacy),
            f"federated round {round_number} (plain averaging)", approver)

    results = at_every_hospital(hospitals, train_at)
    for hospital, result in zip(hospitals, results):
        _record(log, hospital, result)
    log.seconds = time.perf_counter() - started
    return weighted_average([(r["weights"], int(r["n_samples"])) for r in results]), log


def aggregation_inputs(hospital: Hospital) -> dict:
    """The hospital's private aggregation key asset, an input of secure training
    (looked up once per hospital: the key does not change while its domain runs)."""
    if hospital.aggregation_key is None:
        dataset = find_dataset(hospital.client, AGGREGATION_DATASET)
        if dataset is None:
            raise DomainError(f"{hospital.name} has no aggregation key: its admin runs "
                              "`python -m domain_setup federation enable`")
        hospital.aggregation_key = dataset.assets[AGGREGATION_ASSET]
    return {"aggregation_key": hospital.aggregation_key}


def new_round(hospitals: list[Hospital], config: dict,
              train_assets: list[dict] | None = None,
              initial_weights: dict | None = None) -> RoundSpec:
    """A fresh round over `hospitals`: their keys, the images they will train on
    (counted from the shapes of their training assets, `split_assets(..., "train")`,
    looked up here unless given), and the model all of them train: `config` from
    `initial_weights` (every hospital checks it, and the round opens only if all
    trained the same)."""
    missing = [h.name for h in hospitals if not h.public_key]
    if missing:
        raise DomainError(f"no aggregation public key for {', '.join(missing)}")
    disagreements = federation_problems(hospitals)
    if disagreements:
        raise DomainError(disagreements[0] + (f" (and {len(disagreements) - 1} more)"
                                              if len(disagreements) > 1 else ""))
    if train_assets is None:
        train_assets = [split_assets(h.client, h.dataset, "train") for h in hospitals]
    fraction = float(config.get("validation_fraction", 0.0))
    trained = []
    for hospital, assets in zip(hospitals, train_assets):
        shape = assets["images"].shape
        if not shape:
            raise DomainError(f"{hospital.name}: the training images asset has no shape")
        trained.append(int(shape[0]) - held_out_count(int(shape[0]), fraction))
    return RoundSpec.new([h.public_key for h in hospitals], total_samples=sum(trained),
                         model=model_digest(config, initial_weights or None))


def call_domain(hospital: Hospital, method: str, path: str, body: dict | None = None,
                data: str | bytes | None = None) -> Any:
    """One authenticated HTTP call to a hospital's /pneumosyft `path` with a JSON `body`
    (or raw `data`): the response, or a DomainError with the domain's one-line reason.
    Allows the time a sandbox run takes."""
    import requests

    from common.connection import auth_headers, gate_reason

    try:
        response = requests.request(method, f"{hospital.url}/pneumosyft/{path}", json=body,
                                    data=data, headers=auth_headers(hospital.token),
                                    timeout=AGGREGATION_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        raise DomainError(f"{hospital.url} did not answer ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise DomainError(gate_reason(response))
    return response


def request_partial_sum(aggregator: Hospital, spec: RoundSpec, ciphertexts: list[bytes]) -> bytes:
    """Ask `aggregator`'s domain to aggregate its ciphertexts of the round (one HTTP call)."""
    import base64

    body = {"aggregator_keys": spec.to_constant(),
            "ciphertexts": [base64.b64encode(c).decode() for c in ciphertexts]}
    return call_domain(aggregator, "POST", "federation/aggregate", body).content


def secure_round(hospitals: list[Hospital], plan: TrainingPlan, weights: dict,
                 approver: Approver, round_number: int,
                 privacy: dict | None = None, config: dict | None = None
                 ) -> tuple[dict, RoundLog]:
    """One round in which weights leave each hospital only as sealed seeded shares of a
    fresh round; returns the weighted average (with DP-SGD inside each hospital, each
    charging its own ledger, when `privacy` is given)."""
    config = config or plan.config()
    log = RoundLog(round=round_number, secure=True)
    started = time.perf_counter()
    train_assets = at_every_hospital(
        hospitals, lambda h: split_assets(h.client, h.dataset, "train"))
    spec = new_round(hospitals, config, train_assets, weights)

    def train_and_share_at(hospital: Hospital) -> dict:
        inputs = dict(train_assets[hospitals.index(hospital)], **aggregation_inputs(hospital))
        result = _submit_and_run(
            hospital, secure_train_private_xray_plan if privacy else secure_train_xray_plan,
            inputs, _with_privacy({"config": config, "initial_weights": weights,
                                   "aggregator_keys": spec.to_constant()}, privacy),
            f"federated round {round_number} (secure aggregation, round {spec.round_id})",
            approver)
        if len(result["sealed_shares"]) != len(hospitals):
            raise DomainError(f"returned {len(result['sealed_shares'])} shares, "
                              f"expected {len(hospitals)}")
        return result

    trained = at_every_hospital(hospitals, train_and_share_at)
    log.phases["train and share"] = time.perf_counter() - started
    for hospital, result in zip(hospitals, trained):
        _record(log, hospital, result)

    def partial_sum_at(aggregator: Hospital) -> bytes:
        j = hospitals.index(aggregator)
        return request_partial_sum(aggregator, spec,
                                   [result["sealed_shares"][j] for result in trained])

    partial_sums = at_every_hospital(
        hospitals, partial_sum_at,
        failure=f"aggregator {{name}} dropped out of round {round_number}: {{error}}; "
                "the round cannot complete")
    # the hospitals scaled by n_i / total as planned; rescale if a count differed
    correction = spec.total_samples / sum(log.n_samples.values())
    average = {name: (value * correction).astype(np.float32)
               for name, value in combine(partial_sums).items()}
    log.seconds = time.perf_counter() - started
    log.phases["aggregate"] = log.seconds - log.phases["train and share"]
    return average, log


def run_rounds(hospitals: list[Hospital], plan: TrainingPlan, *, rounds: int, secure: bool,
               approver: Approver, initial_weights: dict | None = None,
               on_round: Callable[[dict, RoundLog], None] | None = None,
               privacy: dict | None = None, strategy: Strategy | None = None,
               patience: int | None = None) -> tuple[dict, list]:
    """Up to `rounds` rounds, each starting from the last global model, which
    `strategy` (default FedAvg) makes from the round's average. Round r trains with
    seed ``plan.seed + r - 1``: each round draws fresh batches (the held-out images
    stay the same). With `privacy`, every hospital trains with DP-SGD and charges its
    own ledger each round. With `patience` (the plan needs a validation_fraction),
    stop once the hospitals' weighted validation loss has not improved for that many
    rounds, and return the model that validated best."""
    if int(rounds) < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if patience is not None and not plan.validation_fraction:
        raise ValueError("patience needs validation: set the plan's validation_fraction")
    if patience is not None and int(patience) < 1:
        raise ValueError(f"patience must be at least 1 round, got {patience}")
    strategy = strategy or FedAvg()
    if strategy.needs_control:
        raise ValueError(f"{strategy.name} keeps control variates at each hospital between "
                         "rounds: run it as a federated job (scientist.federated_job)")
    config = strategy.client_config(plan.config())
    weights = dict(initial_weights or {})
    logs: list[RoundLog] = []
    best = BestValidated()
    since_best = 0
    step = secure_round if secure else plain_round
    for r in range(1, rounds + 1):
        average, log = step(hospitals, plan, weights, approver, r, privacy,
                            dict(config, seed=plan.seed + r - 1))
        improved = best.offer(log, weights) if patience is not None else None
        if improved is not None:
            since_best = 0 if improved else since_best + 1
        weights = strategy.next_global(weights, average)
        logs.append(log)
        if on_round:
            on_round(weights, log)
        if patience is not None and since_best >= patience:
            return best.weights, logs  # the model validated best, before these rounds
    return weights, logs
