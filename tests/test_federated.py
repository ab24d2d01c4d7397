"""Secure federated averaging on three live hospital domains equals plain averaging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.aggregation import RoundSpec
from common.errors import DomainError, SharingError
from common.models import build_model
from common.sealing import RoundContext, open_correction
from conftest import OTHER_RESEARCHER, RESEARCHER, approve_with
from domain_setup.aggregation_key import load_or_create_private_key
from demos.local_domain import threads_per_domain
from scientist import TrainingPlan
from scientist.federated import (aggregation_inputs, new_round, plain_round, run_rounds,
                                 secure_round, weighted_average)
from scientist.plans import secure_train_xray_plan
from scientist.submission import run_approved, split_assets, submit_plan

pytestmark = pytest.mark.domain
K = 3


def test_secure_average_equals_plain_average(federation):
    domains, hospitals, reviewers = federation
    plan = TrainingPlan(epochs=1, batch_size=32)
    approver = approve_with(reviewers)
    plain, plain_log = plain_round(hospitals, plan, {}, approver, 1)
    secure, secure_log = secure_round(hospitals, plan, {}, approver, 1)
    assert plain_log.n_samples == secure_log.n_samples
    assert sum(secure_log.n_samples.values()) == 480  # 80 % of 3 x 200
    assert plain.keys() == secure.keys()
    for name in plain:
        assert secure[name].dtype == np.float32 and secure[name].shape == plain[name].shape
        # the same fixed-point sum, in the clear and under shares: the same bits
        np.testing.assert_array_equal(secure[name], plain[name])
    # two rounds continue from the last global model
    weights, logs = run_rounds(hospitals, plan, rounds=2, secure=True, approver=approver,
                               initial_weights=secure)
    assert [log.round for log in logs] == [1, 2]
    assert any(not np.allclose(weights[n], secure[n]) for n in weights)


def test_dp_sgd_in_secure_rounds_charges_each_hospitals_own_ledger(federation):
    from domain_setup.server.privacy_ledger import PrivacyLedger
    from scientist.privacy import private_training

    domains, hospitals, reviewers = federation

    def account(domain):
        return PrivacyLedger.of_state(domain.state.root).account(RESEARCHER, "xray", delta=1e-5)

    # the session's domains are shared: other modules' DP jobs may have charged already
    before = {domain.name: account(domain) for domain in domains}
    plan = TrainingPlan(epochs=1, batch_size=32)
    _, logs = run_rounds(hospitals, plan, rounds=2, secure=True, approver=approve_with(reviewers),
                         privacy=private_training(1.0))
    for log in logs:
        assert sorted(log.privacy) == sorted(h.name for h in hospitals)
        assert all(p["epsilon"] == 1.0 for p in log.privacy.values())
    for domain, hospital in zip(domains, hospitals):
        earlier, now = before[domain.name], account(domain)
        charged = [r for r in now.releases[len(earlier.releases):] if r.status == "charged"]
        assert [r.kind for r in charged] == ["secure_train_private"] * 2
        # two charges of 1.0: composed, they add less than their sum
        assert 0.0 < now.spent - earlier.spent < 2.0 == now.spent_sum - earlier.spent_sum
        assert (1.0 < now.spent) and now.spent < now.spent_sum
        assert logs[-1].privacy[hospital.name]["spent"] == pytest.approx(now.spent)


def _contribution(hospital, spec, plan, reviewers):
    """Hospital's secure-training output for round `spec`, approved by its admin."""
    submission = submit_plan(hospital.client, secure_train_xray_plan,
                             inputs=dict(split_assets(hospital.client, "xray", "train"),
                                         **aggregation_inputs(hospital)),
                             constants={"config": plan.config(), "initial_weights": {},
                                        "aggregator_keys": spec.to_constant()},
                             reason="secure round")
    reviewers[hospital.name].approve(submission.request_id)
    return run_approved(hospital.client, submission)


def test_researcher_sees_only_ciphertext_of_a_hospital(federation):
    domains, hospitals, reviewers = federation
    plan = TrainingPlan(epochs=1, batch_size=32)
    spec = new_round(hospitals, plan.config())
    output = _contribution(hospitals[0], spec, plan, reviewers)
    assert set(output) == {"sealed_shares", "n_samples", "history", "validation"}
    assert output["validation"] is None
    assert all(isinstance(c, bytes) for c in output["sealed_shares"])
    assert not any(isinstance(v, np.ndarray) for v in output.values())
    # what leaves the hospital: one correction share (4 bytes per value) and two sealed seeds
    n_values = sum(int(np.prod(v.shape)) for v in build_model("small_cnn").state_dict().values())
    correction, *seeds = output["sealed_shares"]
    assert n_values * 4 < len(correction) < n_values * 4 * 1.05
    assert all(len(seed) < 200 for seed in seeds)
    # the correction opens only with the hospital's own key, for this very round
    own_key = load_or_create_private_key(domains[0].state)
    other_key = load_or_create_private_key(domains[1].state)
    context = RoundContext(spec.context_id(), K)
    opened = open_correction(own_key, correction, context)
    with pytest.raises(SharingError, match="cannot open"):
        open_correction(other_key, correction, context)
    with pytest.raises(SharingError, match="cannot open"):
        open_correction(own_key, correction, RoundContext(spec.context_id()[::-1], K))
    # even opened, the correction alone is noise: nowhere near trained weights (|w| < 10)
    decoded = np.concatenate([t.data.view(np.int32) / 2.0 ** opened.frac_bits
                              for t in opened.tensors.values()])
    assert np.median(np.abs(decoded)) > 1.0


def _post_aggregate(hospital, spec, ciphertexts, token=None):
    import base64

    import requests

    return requests.post(f"{hospital.url}/pneumosyft/federation/aggregate", timeout=60,
                         headers={"Authorization": f"Bearer {token or hospital.token}"},
                         json={"aggregator_keys": spec.to_constant(),
                               "ciphertexts": [base64.b64encode(c).decode()
                                               for c in ciphertexts]})


def test_an_aggregator_opens_only_whole_authenticated_rounds_once(federation, tmp_path):
    """The attacks a researcher has against the aggregation route, each run for real."""
    from common.sealing import generate_keypair, seal_from, seal_seed

    domains, hospitals, reviewers = federation
    plan = TrainingPlan(epochs=1, batch_size=32)
    spec = new_round(hospitals, plan.config())
    contributions = [_contribution(h, spec, plan, reviewers) for h in hospitals]
    to_first = [c["sealed_shares"][0] for c in contributions]

    # 1. forged seeds "from" the other hospitals, so the first one's correction would be
    # opened alone: the plan runs in the sandbox and refuses the first forged seed
    mine, _ = generate_keypair()
    own_public = spec.keys()[0]
    context = RoundContext(spec.context_id(), K)
    forged = [to_first[0], seal_seed(mine, own_public, bytes(32), context),
              seal_from(mine, own_public, bytes(32), context, purpose="seed")]
    refused = _post_aggregate(hospitals[0], spec, forged)
    assert refused.status_code == 409
    assert refused.json()["error"] == ("the plan raised SharingError inside the sandbox (the "
                                       "hospital admin has the details)")
    refusal = [e for e in domains[0].admin.audit(action="federation.aggregate")
               if e["target"] == spec.round_id][-1]
    assert "seed of party 1: cannot open" in refusal["detail"]  # the plan refused, inside

    # 2. a round this hospital never trained in
    other = new_round(hospitals, plan.config())
    refused = _post_aggregate(hospitals[0], other, to_first)
    assert refused.status_code == 409 and "did not contribute" in refused.json()["error"]

    # 3. the same round id with another party list or total
    changed = RoundSpec(spec.round_id, spec.public_keys, spec.total_samples + 1, spec.model)
    refused = _post_aggregate(hospitals[0], changed, to_first)
    assert refused.status_code == 409 and "another total" in refused.json()["error"]

    # 4. another researcher
    grace = domains[0].researcher_file(OTHER_RESEARCHER, tmp_path / "grace.json")
    import json as json_module

    grace_token = json_module.loads(Path(grace).read_text())["token"]
    refused = _post_aggregate(hospitals[0], spec, to_first, token=grace_token)
    assert refused.status_code == 409 and "another researcher" in refused.json()["error"]

    # the genuine aggregation succeeds once, then never again for this round
    first = _post_aggregate(hospitals[0], spec, to_first)
    assert first.status_code == 200 and len(first.content) > 4 * 90_000
    again = _post_aggregate(hospitals[0], spec, to_first)
    assert again.status_code == 409 and "already aggregated" in again.json()["error"]

    # 5. a second training run for the same round is withheld
    with pytest.raises(DomainError, match="already has this hospital's contribution"):
        _contribution(hospitals[1], spec, plan, reviewers)
    audit = (domains[0].state.root / "audit.jsonl").read_text()
    assert audit.count('"federation.aggregate"') >= 2


def test_a_hospital_dropping_out_is_a_clear_error(federation):
    domains, hospitals, reviewers = federation
    plan = TrainingPlan(epochs=1, batch_size=32)

    def third_admin_denies(hospital, submission):
        if hospital.name == hospitals[2].name:
            reviewers[hospital.name].deny(submission.request_id, reason="offline")
            return
        reviewers[hospital.name].approve(submission.request_id)

    with pytest.raises(DomainError, match=hospitals[2].name):
        secure_round(hospitals, plan, {}, third_admin_denies, 1)


def test_sgd_steps_pass_the_catalogue_and_patience_returns_the_best_validated_model(federation):
    """Equal SGD steps per hospital run through the catalogue plan; patience stops on
    the hospitals' weighted validation loss and returns the model that validated best,
    not the last one."""
    import math

    from common.training import train
    from datasets.xray import generate
    from common.strategies import Strategy

    domains, hospitals, reviewers = federation
    images, labels = generate(400, size=28, seed=11)
    good = train(images, labels, epochs=3, seed=0)["weights"]  # trained here, on other data

    class ThenBlank(Strategy):
        """A strategy that answers every round with a blank model (every value 0)."""

        def next_global(self, current, average):
            return {name: np.zeros_like(value) for name, value in average.items()}

    plan = TrainingPlan(epochs=5, batch_size=32, optimiser="sgd", lr=0.05, local_steps=3,
                        validation_fraction=0.1)
    weights, logs = run_rounds(hospitals, plan, rounds=6, secure=False,
                               approver=approve_with(reviewers), initial_weights=good,
                               strategy=ThenBlank(), patience=1)
    # round 1 validated the good model, round 2 the blank one (loss log 2, measured in
    # each domain): no improvement for 1 round, so it stops and returns the good model
    assert [log.round for log in logs] == [1, 2]
    first, second = (log.validation_summary() for log in logs)
    assert first["loss"] < math.log(2)
    assert second["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert all(np.array_equal(weights[name], good[name]) for name in good)
    # 3 steps of 32 images: one partial pass at every hospital, whatever its size
    for log in logs:
        assert {len(h["loss"]) for h in log.histories.values()} == {1}
    with pytest.raises(ValueError, match="patience must be at least 1"):
        run_rounds(hospitals, plan, rounds=2, secure=False, approver=approve_with(reviewers),
                   patience=0)


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
