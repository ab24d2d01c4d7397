"""Federated jobs on three live hospital domains: approved once, run round by round, with
every hospital computing the global model itself (common.federated_job)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from common.aggregation import model_digest
from common.errors import DomainError
from common.federated_job import round_config, round_id
from common.strategies import make_strategy
from conftest import ADMIN, RESEARCHER, approve_with
from scientist import TrainingPlan
from scientist.federated_job import FederatedJob, _post

pytestmark = pytest.mark.domain
PLAN = TrainingPlan(optimiser="sgd", lr=0.05, local_steps=3, epochs=1, batch_size=32,
                    validation_fraction=0.1)


def _audited(domain, action: str, **fields) -> list[dict]:
    return [e for e in domain.admin.audit(action=action)
            if all(e.get(k) == v for k, v in fields.items())]


def _rounds_aggregated(domain) -> float:
    """The domain's pneumosyft_rounds_aggregated_total, read as its monitoring would."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    token, _ = domain.admin.issue_token(ADMIN, ttl="10m")
    text = requests.get(f"{domain.url}/pneumosyft/metrics", timeout=10,
                        headers={"Authorization": f"Bearer {token}"}).text
    return next(sample.value for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "pneumosyft_rounds_aggregated_total")


def _job(federation, rounds: int, strategy="fedavgm", **options):
    _, hospitals, reviewers = federation
    job = FederatedJob.submit(hospitals, PLAN, rounds=rounds,
                              strategy=make_strategy(strategy), **options)
    job.approve(approve_with(reviewers))
    return job


def test_a_job_approved_once_runs_its_rounds_and_every_hospital_computes_the_same_model(
        federation):
    domains, hospitals, _ = federation
    job = _job(federation, rounds=3)
    approvals_before = [len(_audited(d, "request.approve")) for d in domains]
    aggregated_before = [_rounds_aggregated(d) for d in domains]
    seen = []
    weights, logs = job.run(on_round=lambda w, log: seen.append(dict(w)))
    assert [log.round for log in logs] == [1, 2, 3]
    # each hospital's monitoring counts the three rounds it aggregated
    assert [_rounds_aggregated(d) - before
            for d, before in zip(domains, aggregated_before)] == [3, 3, 3]
    # no request and no approval after the job's own: one per hospital, at the start
    assert [len(_audited(d, "request.approve")) for d in domains] == approvals_before
    for domain in domains:
        rounds = _audited(domain, "job.round", job=job.job["job_id"])
        assert [e["round"] for e in rounds] == ["1", "2", "3"]
    # every hospital aggregated the job's rounds in one sandbox (numpy only) started for
    # the job, not in a new one per round
    for domain in domains:
        aggregated = [_audited(domain, "federation.aggregate",
                               target=round_id(job.job["job_id"], number, 1))
                      for number in (1, 2, 3)]
        assert [e["sandbox"] for (e,) in aggregated] == ["job session"] * 3
        # round 1 took the light spare when one was ready; rounds 2 and 3 its process
        assert [e["warm"] for (e,) in aggregated[1:]] == ["yes", "yes"]
    # round 3 trained at every hospital from the model the researcher computed after round 2
    status = job.status()
    assert all(s["round"] == 3 and s["state"] == "done" for s in status)
    spec = model_digest(round_config(job.config, 3), seen[1])
    for domain in domains:
        last = _audited(domain, "job.round", job=job.job["job_id"], round="3")[0]
        assert spec.startswith(last["model"])
    # every round validated the model it received; the job keeps the best of them
    losses = [log.validation_summary()["loss"] for log in logs]
    assert all(np.isfinite(losses))
    best = int(np.argmin(losses))
    expected = job.initial_weights if best == 0 else seen[best - 1]
    if best:  # round 1's model is the hospitals' fresh one, which the researcher never held
        for name in weights:
            np.testing.assert_array_equal(weights[name], expected[name])


def test_a_job_refuses_rounds_beyond_its_bound_skipped_rounds_and_a_new_global_model(
        federation):
    domains, hospitals, _ = federation
    job = _job(federation, rounds=2)
    first = hospitals[0]
    request = job.submissions[0].request_id
    with pytest.raises(DomainError, match="next is round 1"):
        _post(first, f"{request}/rounds", {"round": 2, "attempt": 1})
    with pytest.raises(DomainError, match="no other field"):
        _post(first, f"{request}/rounds", {"round": 1, "attempt": 1,
                                           "initial_weights": {}})
    job.run(rounds=1)
    previous = job.previous
    body = {"round": 2, "attempt": 1, "previous": {
        "attempt": 1, "partial_sums": [base64.b64encode(p).decode()
                                       for p in previous["partial_sums"]],
        "tags": [base64.b64encode(tags[0]).decode() for tags in previous["tags"]]}}
    # a partial sum that is not the one its aggregator released: another global model
    forged = dict(body, previous=dict(body["previous"], partial_sums=[
        base64.b64encode(previous["partial_sums"][1]).decode()] * 3))
    with pytest.raises(DomainError, match="is not the one its aggregator released"):
        _post(first, f"{request}/rounds", forged)
    # another hospital's tags do not vouch for this one
    stolen = dict(body, previous=dict(body["previous"], tags=[
        base64.b64encode(tags[1]).decode() for tags in previous["tags"]]))
    with pytest.raises(DomainError, match="is not its aggregator's"):
        _post(first, f"{request}/rounds", stolen)
    refusals = _audited(domains[0], "job.round", job=job.job["job_id"], outcome="refused")
    assert len(refusals) == 4
    job.run()
    with pytest.raises(DomainError, match="approved for 2 rounds"):
        _post(first, f"{request}/rounds", dict(body, round=3))
    # the syft run of a job request is refused: it runs round by round
    from scientist.submission import run_approved
    with pytest.raises(Exception, match="round by round"):
        run_approved(first.client, job.submissions[0])


def test_an_admins_stop_ends_the_job_at_its_next_round(federation):
    domains, hospitals, _ = federation
    job = _job(federation, rounds=5)
    job.run(rounds=1)
    stopped = domains[1].admin.stop_job(job.submissions[1].request_id, reason="enough")
    assert stopped["state"] == "stopped"
    with pytest.raises(DomainError, match=f"{hospitals[1].name} failed in round 2: .*stopped "
                                          "by .*enough"):
        job.run()
    assert _audited(domains[1], "job.stop", job=job.job["job_id"])[0]["reason"] == "enough"


def test_a_member_removed_mid_job_stops_its_rounds_there_until_it_is_back(federation):
    domains, hospitals, _ = federation
    job = _job(federation, rounds=2)
    job.run(rounds=1)
    county = domains[2].admin
    st_mary = next(m for m in county.federation_members() if m["name"] == hospitals[0].name)
    county.remove_federation_member(st_mary["name"])
    try:
        with pytest.raises(DomainError, match=f"{hospitals[2].name} failed in round 2: .*not a "
                                              "member of this hospital's federation"):
            job.run()
    finally:
        county.add_federation_member(st_mary["name"], url=st_mary["url"],
                                     public_key=st_mary["public_key"])
    _, logs = job.run()  # the round again, as a new attempt, with the members it had
    assert [log.round for log in logs] == [1, 2] and job.attempt == 1


def test_a_dp_job_charges_every_round_and_ends_at_its_rounds(federation):
    from domain_setup.server.privacy_ledger import PrivacyLedger
    from scientist.privacy import private_training

    domains, hospitals, reviewers = federation
    job = FederatedJob.submit(hospitals, TrainingPlan(epochs=1, batch_size=32), rounds=2,
                              privacy=private_training(0.5))
    shown = domains[0].cli("review", "show", job.submissions[0].request_id)
    assert "up to 2 rounds of fedavg" in shown and "ε 0.5 per round, 2 rounds" in shown
    before = [PrivacyLedger.of_state(d.state.root).account(RESEARCHER, "xray", delta=1e-5)
              for d in domains]
    job.approve(approve_with(reviewers))
    _, logs = job.run()
    assert all(p["epsilon"] == 0.5 for log in logs for p in log.privacy.values())
    assert all(not log.histories and not log.validation for log in logs)  # nothing un-noised
    for domain, earlier in zip(domains, before):
        account = PrivacyLedger.of_state(domain.state.root).account(RESEARCHER, "xray",
                                                                    delta=1e-5)
        new = [r for r in account.releases if r.status == "charged"][len(earlier.charged):]
        assert [r.kind for r in new] == ["federated_job_private"] * 2
    with pytest.raises(DomainError, match="approved for 2 rounds"):
        _post(hospitals[0], f"{job.submissions[0].request_id}/rounds",
              {"round": 3, "attempt": 1})


def test_kill_9_of_a_hospital_mid_round_is_named_and_the_job_resumes_after_its_restart(
        federation):
    import json
    import os
    import signal
    import threading
    import time

    domains, hospitals, _ = federation
    royal = domains[1]
    job = _job(federation, rounds=3)
    job.run(rounds=1)
    failure: list[BaseException] = []
    runner = threading.Thread(target=lambda: _keep_failure(job.run, failure), daemon=True)
    runner.start()
    audit_log = royal.state.root / "audit.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not any(
            e.get("action") == "job.round" and e.get("round") == "2"
            and e.get("job") == job.job["job_id"] and e.get("outcome", "ok") == "ok"
            for e in map(json.loads, audit_log.read_text().splitlines())):
        time.sleep(0.05)
    pid = royal.state.read_pid()
    os.kill(pid, signal.SIGKILL)  # while round 2 trains there: no chance to clean up
    runner.join(timeout=300)
    assert not runner.is_alive()
    assert failure and isinstance(failure[0], DomainError)
    assert f"{hospitals[1].name} failed in round 2" in str(failure[0])
    assert "did not answer" in str(failure[0])
    royal.start()
    weights, logs = job.run()  # round 2 again (a new attempt), then round 3
    assert [log.round for log in logs] == [1, 2, 3]
    assert [s["round"] for s in job.status()] == [3, 3, 3]
    assert all(np.isfinite(v).all() for v in weights.values())


def _keep_failure(work, into: list) -> None:
    try:
        work()
    except BaseException as exc:  # the test reads it
        into.append(exc)


def test_a_scaffold_job_keeps_each_hospitals_control_variate_at_home(federation):
    domains, hospitals, _ = federation
    job = _job(federation, rounds=2, strategy="scaffold")
    shown = []
    weights, logs = job.run(on_round=lambda w, log: shown.append(log))
    assert [log.round for log in logs] == [1, 2]
    assert not any(name.startswith("scaffold_control/") for name in weights)
    assert job.strategy.control  # the researcher steps c too: it is the rounds' average
    for domain in domains:
        request = job.submissions[domains.index(domain)].request_id
        kept = sorted(p.name for p in (domain.state.root / "jobs").glob(f"{request}.control-*"))
        assert kept == [f"{request}.control-2.npz", f"{request}.control-3.npz"]
        released = [e for e in _audited(domain, "execution", job=job.job["job_id"])]
        assert released and all("client_control" not in e["released"] for e in released)


def test_a_job_is_stopped_before_its_first_round_and_a_released_round_is_not_run_again(
        federation):
    domains, hospitals, _ = federation
    unstarted = _job(federation, rounds=2)
    domains[0].admin.stop_job(unstarted.submissions[0].request_id, reason="consent withdrawn")
    with pytest.raises(DomainError, match="has ended: stopped by the hospital's admin: "
                                          "consent withdrawn"):
        unstarted.run()

    job = _job(federation, rounds=1)
    job.run()
    first, request = hospitals[0], job.submissions[0].request_id
    with pytest.raises(DomainError, match="was aggregated here already"):
        _post(first, f"{request}/rounds", {"round": 1, "attempt": 2})
    spec = job.status()[0]  # the job's round is not the ordinary route's to open again
    from scientist.federated import call_domain
    record_spec = _job_round_spec(domains[0], request)
    with pytest.raises(DomainError, match="is a federated job's"):
        call_domain(first, "POST", "federation/aggregate",
                    {"aggregator_keys": record_spec, "ciphertexts": [""] * 3})
    assert spec["state"] == "done"
    with pytest.raises(DomainError, match="nested too deep"):
        call_domain(first, "POST", f"jobs/{request}/rounds", None, data="[" * 100_000)


def _job_round_spec(domain, request_id: str) -> dict:
    from domain_setup.server.job_ledger import JobLedger

    return JobLedger.of_state(domain.state.root).get(request_id).spec
