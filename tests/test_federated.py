"""Secure federated averaging on three live hospital domains equals plain averaging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.errors import DomainError, SharingError
from common.sealing import open_share
from common.secret_sharing import decode
from conftest import ACCOUNTS_YAML, RESEARCHER
from domain_setup.aggregation_key import load_or_create_private_key
from demos.local_domain import LocalDomain, threads_per_domain
from domain_setup.admin import AdminClient
from scientist import TrainingPlan
from scientist.federated import join, plain_round, run_rounds, secure_round, weighted_average
from scientist.plans import secure_train_xray_plan
from scientist.submission import run_approved, split_assets, submit_plan

pytestmark = pytest.mark.domain
K = 3


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """Three small hospital domains, each with one IID partition and its aggregation key."""
    root = tmp_path_factory.mktemp("federation")
    domains = []
    try:
        for i in range(1, K + 1):
            domain = LocalDomain.start_new(f"Hospital {i}", root / f"h{i}",
                                           torch_threads=threads_per_domain(K))
            domains.append(domain)
            domain.cli("upload", "synthetic", "--name", "xray", "--n", "600", "--size", "28",
                       "--partition", f"{i}/{K}")
            domain.cli("accounts", "apply", str(ACCOUNTS_YAML))
            domain.cli("federation", "enable")
        reviewers = {d.name: AdminClient(d.state).reviewer for d in domains}
        hospitals = [join(str(d.researcher_file(RESEARCHER))) for d in domains]
        yield domains, hospitals, reviewers
    finally:
        for domain in domains:
            domain.stop()


def _approve(reviewers):
    return lambda hospital, submission: reviewers[hospital.name].approve(submission.request_id)


def test_secure_average_equals_plain_average(federation):
    domains, hospitals, reviewers = federation
    plan = TrainingPlan(epochs=1, batch_size=32)
    approver = _approve(reviewers)
    plain, plain_log = plain_round(hospitals, plan, {}, approver, 1)
    secure, secure_log = secure_round(hospitals, plan, {}, approver, 1)
    assert plain_log.n_samples == secure_log.n_samples
    assert sum(secure_log.n_samples.values()) == 480  # 80 % of 3 x 200
    assert plain.keys() == secure.keys()
    for name in plain:
        assert secure[name].dtype == np.float32 and secure[name].shape == plain[name].shape
        np.testing.assert_allclose(secure[name], plain[name], atol=1e-4, rtol=0)
    # two rounds continue from the last global model
    weights, logs = run_rounds(hospitals, plan, rounds=2, secure=True, approver=approver,
                               initial_weights=secure)
    assert [log.round for log in logs] == [1, 2]
    assert any(not np.allclose(weights[n], secure[n]) for n in weights)


def test_dp_sgd_in_secure_rounds_charges_each_hospitals_own_ledger(federation):
    from domain_setup.server.privacy_ledger import PrivacyLedger
    from scientist.privacy import private_training

    domains, hospitals, reviewers = federation
    plan = TrainingPlan(epochs=1, batch_size=32)
    _, logs = run_rounds(hospitals, plan, rounds=2, secure=True, approver=_approve(reviewers),
                         privacy=private_training(1.0))
    for log in logs:
        assert sorted(log.privacy) == sorted(h.name for h in hospitals)
        assert all(p["epsilon"] == 1.0 for p in log.privacy.values())
    for domain, hospital in zip(domains, hospitals):
        account = PrivacyLedger.of_state(domain.state.root).account(RESEARCHER, "xray",
                                                                    delta=1e-5)
        charged = [r for r in account.releases if r.status == "charged"]
        assert [r.kind for r in charged] == ["secure_train_private"] * 2
        assert 1.0 < account.spent < 2.0 == account.spent_sum  # composed beats the sum
        assert logs[-1].privacy[hospital.name]["spent"] == pytest.approx(account.spent)


def test_researcher_sees_only_ciphertext_of_a_hospital(federation):
    domains, hospitals, reviewers = federation
    hospital = hospitals[0]
    plan = TrainingPlan(epochs=1, batch_size=32)
    keys = [h.public_key for h in hospitals]
    submission = submit_plan(hospital.client, secure_train_xray_plan,
                             inputs=split_assets(hospital.client, "xray", "train"),
                             constants={"config": plan.config(), "initial_weights": {},
                                        "aggregator_keys": {"public_keys": keys}},
                             reason="secure round")
    reviewers[hospital.name].approve(submission.request_id)
    output = run_approved(hospital.client, submission)
    assert set(output) == {"sealed_shares", "n_samples", "history"}
    assert all(isinstance(c, bytes) for c in output["sealed_shares"])
    # what the researcher holds has no float arrays, and no share opens with a wrong key
    assert not any(isinstance(v, np.ndarray) for v in output.values())
    own_key = load_or_create_private_key(domains[0].state)
    other_key = load_or_create_private_key(domains[1].state)
    opened = open_share(output["sealed_shares"][0], own_key)
    assert opened.party == 0 and opened.n_parties == K
    with pytest.raises(SharingError, match="cannot open"):
        open_share(output["sealed_shares"][0], other_key)
    # even opened, one share alone is noise: decoded, it is nowhere near trained weights
    decoded = np.concatenate([decode(t.data) for t in opened.tensors.values()])
    assert np.median(np.abs(decoded)) > 1e9


def test_a_hospital_dropping_out_is_a_clear_error(federation):
    domains, hospitals, reviewers = federation
    plan = TrainingPlan(epochs=1, batch_size=32)

    def approve_but_third_refuses(hospital, submission):
        if hospital.name == hospitals[2].name and "aggregate" in submission.func_name:
            reviewers[hospital.name].deny(submission.request_id, reason="offline")
            return
        reviewers[hospital.name].approve(submission.request_id)

    with pytest.raises(DomainError, match=f"aggregator {hospitals[2].name} dropped out"):
        secure_round(hospitals, plan, {}, approve_but_third_refuses, 1)


def test_weighted_average_weights_by_sample_count():
    a = {"w": np.array([1.0, 2.0], np.float32)}
    b = {"w": np.array([3.0, 6.0], np.float32)}
    np.testing.assert_allclose(weighted_average([(a, 1), (b, 3)])["w"], [2.5, 5.0])
    with pytest.raises(DomainError):
        weighted_average([(a, 0)])


def test_hospitals_on_one_machine_share_its_cores(federation):
    """Each local domain's server runs torch with its share of the cores, not all of them."""
    domains, _, _ = federation
    for domain in domains:
        pid = domain.state.read_pid()
        assert pid is not None, f"{domain.name} has no server pid"
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
        environ = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        assert environ.get("OMP_NUM_THREADS") == str(threads_per_domain(K)), domain.name
