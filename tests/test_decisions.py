"""The server's decisions without a live domain: what a failure tells the researcher, who a
secure round may name, when the admin trusts a run, what the privacy charge gives a plan,
when an approval is refused, and the round and approval ledgers. Real policy files, real
SQLite ledgers in a temporary folder, real keys; the live attacks are in
test_release_bounds.py."""

from __future__ import annotations

import os
import stat
import time

import numpy as np
import pytest

from common.aggregation import RoundSpec, model_digest
from common.errors import PolicyError
from common.sealing import generate_keypair, key_to_text
from common.training_config import default_training_config
from conftest import PROJECT_ROOT
from demos.local_domain import TRUSTED_POLICIES
from domain_setup.policy.federation import (MEMBERS_FILE, FederationMembers, Member,
                                            load_members)
from domain_setup.policy.snapshot import DomainPolicies, LivePolicies
from domain_setup.sandbox.errors import (ContractViolation, PlanFailed, PlanOutOfMemory,
                                         PlanTimeout, ResultRefused)
from domain_setup.sandbox.limits import SandboxLimits
from domain_setup.server.approval_guard import Override, Overrides, approval_refusal
from domain_setup.server.approval_ledger import ApprovalLedger
from domain_setup.server.execution import PlanExecutor, Withheld
from domain_setup.server.privacy_charge import PrivacyCharge, PrivacyRefused
from domain_setup.server.privacy_ledger import PrivacyLedger
from domain_setup.server.round_ledger import RoundLedger, RoundRefused
from domain_setup.server.round_quote import own_training_count, round_quote
from domain_setup.server.run_queue import RunQueue
from domain_setup.vetting.contract_parts import ContractContext
from domain_setup.vetting.failures import researcher_message
from domain_setup.vetting.registry import ReleaseRefused, plan_kind
from domain_setup.vetting.verdicts import Verdict

ADA = "ada@pneumosyft-research.org"
LIMITS = SandboxLimits(timeout_seconds=60, memory_mb=1024, cpu_seconds=120)
CONFIG = default_training_config()


def _key() -> tuple[bytes, bytes, str]:
    private, public = generate_keypair()
    return private, public, key_to_text(public)


def _spec(keys: list[str], total: int = 480, config: dict = CONFIG) -> RoundSpec:
    return RoundSpec.new(keys, total_samples=total, model=model_digest(config, None))


# --------------------------------------------------------------------------- failures

def test_a_failure_tells_the_researcher_a_fixed_category_never_a_value():
    labels = "L" + "0110100111" * 30  # a class named after 300 private labels
    secret = PlanFailed(f"plan raised {labels}: 764.605", exc_type=labels,
                        exc_message="largest |value| 764.605", traceback="...")
    message = researcher_message(kind="custom", error=secret, limits=LIMITS)
    assert message == ("the plan raised Exception inside the sandbox (the hospital admin has "
                       "the details)")
    # builtin and project exception names are reported as they are: a short fixed list
    for name in ("ValueError", "SharingError", "MemoryError"):
        assert f"raised {name} inside" in researcher_message(
            kind="train", error=PlanFailed("x", exc_type=name), limits=LIMITS)
    contract = ContractViolation("history.loss[2] is not finite (nan); weights['w'] 0.157")
    assert researcher_message(kind="train", error=contract, limits=LIMITS) == \
        "result withheld: it breaks the train output contract (the hospital admin has the details)"
    refused = ResultRefused("result['0110100111'] is a torch tensor")
    assert "0110" not in researcher_message(kind="custom", error=refused, limits=LIMITS)
    assert "MemoryError: 12 labels" not in researcher_message(
        kind="custom", error=PlanOutOfMemory("MemoryError: 12 labels"), limits=LIMITS)
    assert researcher_message(kind="custom", error=PlanTimeout("x"), limits=LIMITS) == \
        "the plan exceeded its time limit (60 s wall clock, 120 s CPU) and was stopped"
    undeclared = ReleaseRefused("the train plan kind declares no bound for secret")
    assert "secret" not in researcher_message(kind="train", error=undeclared, limits=LIMITS)


# --------------------------------------------------------------------------- federation

def test_a_round_may_name_only_this_hospital_and_its_members():
    _, own, own_text = _key()
    _, royal, royal_text = _key()
    _, _, stranger_text = _key()
    members = FederationMembers.of([Member.checked("Royal Infirmary", "http://10.0.0.2:8081",
                                                   royal_text)])
    assert members.round_problems(_spec([own_text, royal_text]), own_key=own, own_count=240) == []
    assert members.party_names(_spec([own_text, royal_text, stranger_text]), own) == [
        "this hospital", "Royal Infirmary", "NOT A MEMBER"]
    fake = members.round_problems(_spec([own_text, stranger_text]), own_key=own, own_count=240)
    assert fake == ["the round's party 1 is not a member of this hospital's federation "
                    "(python -m domain_setup federation members list)"]
    assert "does not name this hospital" in members.round_problems(
        _spec([royal_text, stranger_text]), own_key=own, own_count=None)[0]
    assert members.round_problems(_spec([own_text, royal_text], total=1), own_key=own,
                                  own_count=240) == [
        "the round's total of 1 images is below the 240 this hospital trains on"]
    assert members.round_problems(_spec([own_text, royal_text]), own_key=None, own_count=1) == [
        "this hospital is not an aggregation party (federation enable)"]
    with pytest.raises(PolicyError, match="same aggregation key"):
        members.adding(Member.checked("Royal again", "https://royal.example.org", royal_text))
    with pytest.raises(PolicyError, match="same name"):
        members.adding(Member.checked("royal infirmary", "https://b.example.org", own_text))
    with pytest.raises(PolicyError, match="no member called"):
        members.removing("County")
    assert members.removing("ROYAL INFIRMARY ").members == ()


@pytest.mark.parametrize("name, url, key, reason", [
    ("", "http://a:1", None, "1 to 100 printable"),
    ("A\nB", "http://a:1", None, "1 to 100 printable"),
    ("A", "ftp://a:1", None, "http(s)://HOST:PORT"),
    ("A", "http://", None, "http(s)://HOST:PORT"),
    ("A", "http://a:1", "not a key", "aggregation public key"),
])
def test_a_member_from_outside_input_is_checked(name, url, key, reason):
    with pytest.raises(PolicyError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        Member.checked(name, url, key if key is not None else _key()[2])


def test_the_member_list_is_kept_0600_in_the_state_directory_and_put_in_force(tmp_path):
    live = LivePolicies(DomainPolicies.load(TRUSTED_POLICIES, tmp_path))
    assert live.current.federation.members == ()
    member = Member.checked("County General", "http://127.0.0.1:9", _key()[2])
    live.set_members(live.current.federation.adding(member))
    assert live.current.federation.members == (member,)
    path = tmp_path / MEMBERS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_members(tmp_path).members == (member,)
    assert live.reload().federation.members == (member,)  # a policy reload keeps them
    path.write_text("{not json")
    with pytest.raises(PolicyError, match="not a federation member list"):
        load_members(tmp_path)


def test_the_round_quote_names_the_parties_and_counts_this_hospitals_images(tmp_path):
    live = LivePolicies(DomainPolicies.load(TRUSTED_POLICIES, tmp_path))
    _, own, own_text = _key()
    _, _, royal_text = _key()
    live.set_members(live.current.federation.adding(
        Member.checked("Royal Infirmary", "http://127.0.0.1:9", royal_text)))
    constants = {"config": CONFIG, "initial_weights": {},
                 "aggregator_keys": _spec([own_text, royal_text], total=100).to_constant()}
    quote = round_quote(live.current, constants, own_key=own, own_count=own_training_count(
        300, dict(CONFIG, validation_fraction=0.1)))
    assert quote["parties"] == ["this hospital", "Royal Infirmary"]
    assert quote["problems"] == ["the round's total of 100 images is below the 270 this "
                                 "hospital trains on"]
    assert round_quote(live.current, {"aggregator_keys": "junk"}, own_key=own,
                       own_count=1) is None


# --------------------------------------------------------------------------- the dispatch

@pytest.fixture
def executor(tmp_path):
    """The dispatch on real policy files and real ledgers (no syft worker: the decisions
    below never reach syft)."""
    def build(policies_dir, own_key=None):
        live = LivePolicies(DomainPolicies.load(policies_dir, tmp_path))
        return PlanExecutor(policies=live, config_extra={}, sandbox_factory=None, audit=None,
                            worker=None, ledger=PrivacyLedger(tmp_path / "privacy.sqlite3"),
                            rounds=RoundLedger(tmp_path / "rounds.sqlite3"),
                            approvals=ApprovalLedger(tmp_path / "approvals.sqlite3"),
                            queue=RunQueue(memory_budget_mb=4096, max_running=1),
                            own_aggregation_key=lambda: own_key)
    return build


def test_trusted_values_leave_a_dp_dataset_only_with_an_override(executor):
    shipped = executor(PROJECT_ROOT / "policies")
    assert not shipped._trusted("xray", "c0de")          # require_dp: true
    shipped.approvals.record("c0de", "r1", approver="owner@stmary-hospital.org",
                             override_reason="ethics board approved this analysis")
    assert shipped._trusted("xray", "c0de")              # the admin's explicit trust
    assert not shipped._trusted("xray", "other")
    assert shipped._trusted("unlisted", "other")         # no privacy rules: no DP required
    assert executor(TRUSTED_POLICIES)._trusted("xray", "other")
    train, train_private = plan_kind("train"), plan_kind("train_private")
    assert train.needs_trust and not train_private.needs_trust
    with pytest.raises(ReleaseRefused, match="requires DP"):
        train.release({"weights": {}, "history": {}, "n_samples": 1, "validation": None},
                      trusted=False)


def test_a_contribution_is_checked_again_before_any_data_enters(executor):
    own_private, own, own_text = _key()
    _, _, stranger_text = _key()
    dispatch = executor(PROJECT_ROOT / "policies", own_key=own)
    context = ContractContext(n_samples=240)
    inputs = {"config": CONFIG, "initial_weights": {},
              "aggregator_keys": _spec([own_text, stranger_text]).to_constant()}
    with pytest.raises(Withheld, match="the round is refused: the round's party 1 is not a "
                                       "member"):
        dispatch._contribute(inputs, ADA, context)
    _, royal, royal_text = _key()
    live = dispatch.policies
    live.set_members(live.current.federation.adding(
        Member.checked("Royal Infirmary", "http://127.0.0.1:9", royal_text)))
    spec = _spec([own_text, royal_text])
    # the researcher hands this hospital another config than the round's model
    lr_zero = dict(inputs, aggregator_keys=spec.to_constant(), config=dict(CONFIG, lr=1e-9))
    with pytest.raises(Withheld, match="model digest is not this request's config"):
        dispatch._contribute(lr_zero, ADA, context)
    dispatch._contribute(dict(inputs, aggregator_keys=spec.to_constant()), ADA, context)
    with pytest.raises(Withheld, match="already has this hospital's contribution"):
        dispatch._contribute(dict(inputs, aggregator_keys=spec.to_constant()), ADA, context)


def test_the_privacy_charge_gives_the_plan_the_domains_seed_and_refunds_only_by_the_dispatch(
        tmp_path):
    rules = DomainPolicies.load(PROJECT_ROOT / "policies").privacy.dataset("xray")
    ledger = PrivacyLedger(tmp_path / "privacy.sqlite3")
    seeds = []
    for run in range(2):
        inputs = {"images": np.zeros((300, 1, 28, 28), np.uint8), "config": CONFIG,
                  "privacy": {"target_epsilon": 1.0, "max_grad_norm": 1.0, "noise_seed": 7}}
        charge = PrivacyCharge.prepare(plan_kind("train_private"), inputs, ledger=ledger,
                                       rules=rules, dataset="xray", email=ADA,
                                       groups=("pneumonia-study",), role="data_scientist",
                                       run_id=f"run{run}")
        given = inputs["privacy"]
        assert set(given) == {"noise_multiplier", "max_grad_norm", "delta", "noise_seed"}
        assert given["delta"] == rules.delta and given["noise_seed"] != 7
        seeds.append(given["noise_seed"])
    assert seeds[0] != seeds[1] and all(0 <= s < 2 ** 64 for s in seeds)
    account = ledger.account(ADA, "xray", delta=rules.delta)
    assert len([r for r in account.releases if r.status == "charged"]) == 2
    charge.refund(ledger, "refused before any data entered the sandbox")
    assert len([r for r in ledger.account(ADA, "xray", delta=rules.delta).releases
                if r.status == "charged"]) == 1
    with pytest.raises(PrivacyRefused, match="may spend at most 3"):
        PrivacyCharge.prepare(plan_kind("train_private"), dict(inputs, privacy={
            "target_epsilon": 4.0, "max_grad_norm": 1.0}), ledger=ledger, rules=rules,
            dataset="xray", email=ADA, groups=(), role="data_scientist", run_id="run3")


def test_noisy_counts_are_noised_afresh_by_the_server_and_only_metrics_leave(tmp_path):
    kind = plan_kind("evaluate_private")
    mechanism = kind.mechanism.size(target_epsilon=1.0, delta=1e-5, n_samples=100, config={})
    counts = {"histogram": [[5] * 10 + [0] * 10, [0] * 10 + [5] * 10], "n_samples": 100}
    first = kind.mechanism.post_process(counts, mechanism)
    second = kind.mechanism.post_process(counts, mechanism)
    assert set(first) == {"metrics"}
    assert first["metrics"]["roc"] != second["metrics"]["roc"]  # fresh noise every release


# --------------------------------------------------------------------------- approvals

def test_an_approval_needs_a_live_override_unless_the_verdict_is_vetted():
    vetted = Verdict("vetted", "train", "0" * 64)
    custom = Verdict("custom", None, "0" * 64)
    override = Override("r1", "owner@stmary-hospital.org", "read it", time.time() + 60)
    assert approval_refusal(vetted, None, [], request_id="r1", requester=ADA) is None
    assert approval_refusal(custom, override, [], request_id="r1", requester=ADA) is None
    reason, public = approval_refusal(custom, None, [], request_id="r1", requester=ADA)
    assert reason == "custom code: needs an admin's review" and "--override --reason" in public
    reason, public = approval_refusal(vetted, override, ["images"], request_id="r1",
                                      requester=ADA)
    assert "another account" in reason and "not even an override" in public
    overrides = Overrides()
    overrides.register("r1", "owner@stmary-hospital.org", "read it")
    assert overrides.take("r1") is not None and overrides.take("r1") is None  # used up


def test_the_approval_ledger_remembers_overrides_across_instances(tmp_path):
    ApprovalLedger(tmp_path / "a.sqlite3").record("c1", "r1", approver="owner@x.org")
    ApprovalLedger(tmp_path / "a.sqlite3").record("c2", "r2", approver="owner@x.org",
                                                  override_reason="custom analysis, read")
    ledger = ApprovalLedger(tmp_path / "a.sqlite3")
    assert not ledger.overridden("c1") and ledger.overridden("c2")
    assert not ledger.overridden("c3")
    # an approval is for one run, across instances (and so across a restart)
    assert ledger.claim_run("c1") and not ledger.claim_run("c1")
    assert not ApprovalLedger(tmp_path / "a.sqlite3").claim_run("c1")
    assert stat.S_IMODE(os.stat(tmp_path / "a.sqlite3").st_mode) == 0o600


def test_a_round_is_contributed_once_and_aggregated_once_for_its_researcher(tmp_path):
    rounds = RoundLedger(tmp_path / "rounds.sqlite3")
    spec = _spec([_key()[2], _key()[2]])
    rounds.contribute(spec, ADA)
    with pytest.raises(RoundRefused, match="another researcher"):
        rounds.claim(spec, "grace@lung-imaging-lab.ac.uk")
    changed = RoundSpec(spec.round_id, spec.public_keys, spec.total_samples,
                        model_digest(dict(CONFIG, lr=0.5), None))
    with pytest.raises(RoundRefused, match="must name the same round"):
        rounds.claim(changed, ADA)
    rounds.claim(spec, ADA)
    with pytest.raises(RoundRefused, match="being aggregated"):
        rounds.claim(spec, ADA)
    rounds.unclaim(spec.round_id)
    rounds.claim(spec, ADA)
    rounds.released(spec.round_id)
    with pytest.raises(RoundRefused, match="already aggregated"):
        rounds.claim(spec, ADA)
