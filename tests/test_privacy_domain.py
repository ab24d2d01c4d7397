"""Differential privacy on a live domain: DP-SGD training and DP evaluation as vetted plans,
the ledger charged with what the accountant says, `require_dp`, over-budget denial, a
grant, two runs approved at once racing for the last of a budget, and the ledger across a
restart. The domain has its own privacy.yaml (DP required on xray)."""

from __future__ import annotations

import shutil
import threading

import pytest
import requests

from common.dp_accounting import Mechanism, epsilon, gaussian_count_mechanism
from common.models import build_model
from conftest import (ADMIN, DATA_OWNER, OTHER_RESEARCHER, PROJECT_ROOT, RESEARCHER,
                      start_hospital)
from domain_setup.server.privacy_ledger import PrivacyLedger
from scientist import TrainingPlan, connect
from scientist.plans import train_xray_plan
from scientist.privacy import (estimate_training, evaluate_private_xray_plan, my_budget,
                               private_evaluation, private_training, train_private_xray_plan)
from scientist.submission import run_approved, split_assets, submit_plan

pytestmark = pytest.mark.domain
DELTA = 1e-5
PRIVACY_YAML = """datasets:
  xray:
    delta: 1.0e-5
    require_dp: true
    max_epsilon_per_request: 8.0
    min_samples_per_release: 50
    budgets:
      - users: [ada@pneumosyft-research.org]
        epsilon: 20.0
      - groups: [pneumonia-study]
        epsilon: 10.0
"""


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    root = tmp_path_factory.mktemp("privacy")
    policies = root / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    (policies / "privacy.yaml").write_text(PRIVACY_YAML)
    hospital = start_hospital(root / "state", "Privacy General",
                              extra_args=("--policies", str(policies)))
    yield hospital
    hospital.stop()


@pytest.fixture(scope="module")
def ada_file(domain):
    return domain.researcher_file(RESEARCHER)


@pytest.fixture(scope="module")
def grace_file(domain):
    return domain.researcher_file(OTHER_RESEARCHER)


def ledger_of(domain) -> PrivacyLedger:
    return PrivacyLedger.of_state(domain.state.root)


def zero_weights() -> dict:
    return {k: v.detach().numpy() for k, v in build_model("small_cnn").state_dict().items()}


def submit_evaluation(client, target: float, name: str | None = None):
    return submit_plan(client, evaluate_private_xray_plan, inputs=split_assets(client, "xray", "test"),
                       constants={"weights": zero_weights(),
                                  "config": TrainingPlan(epochs=1).config(),
                                  "privacy": private_evaluation(target)},
                       reason="DP evaluation", name=name)


def test_dp_training_is_vetted_charged_and_returns_the_epsilon_spent(domain, ada_file):
    ada = connect(connection_file=ada_file)
    plan, privacy = TrainingPlan(epochs=1), private_training(2.0)
    submission = submit_plan(ada, train_private_xray_plan, inputs=split_assets(ada, "xray", "train"),
                             constants={"config": plan.config(), "initial_weights": {},
                                        "privacy": privacy}, reason="DP model, ε 2")
    shown = domain.cli("review", "show", submission.request_id)
    assert "vetted plan 'train_private'" in shown
    assert f"privacy   ε 2 at δ 1e-05 on xray; {RESEARCHER} has spent 0.00 of 20" in shown
    assert "approved" in domain.cli("review", "auto", "--approve-compliant")
    result = run_approved(ada, submission)
    assert set(result) == {"weights", "n_samples", "privacy"}  # nothing un-noised
    assert result["privacy"]["epsilon"] == 2.0 and result["privacy"]["delta"] == DELTA
    assert result["privacy"]["spent"] == pytest.approx(2.0, abs=0.03)
    assert result["privacy"]["left"] == pytest.approx(18.0, abs=0.03)
    (account,) = my_budget(ada_file)
    charged = account["history"][-1]
    assert (account["dataset"], charged["kind"], charged["status"]) == \
        ("xray", "train_private", "charged")
    # what the researcher estimates locally is what the domain charged
    estimate = estimate_training(plan, privacy, n_samples=result["n_samples"], delta=DELTA)
    assert charged["mechanism"]["noise_multiplier"] == pytest.approx(
        estimate["noise_multiplier"])
    charges = [e for e in domain.admin.audit(action="privacy.charge")
               if e["actor"] == RESEARCHER]
    assert charges and charges[-1]["epsilon"] == "2"
    assert "train_private" in domain.cli("privacy", "show", RESEARCHER)


def test_require_dp_makes_plain_training_a_violation_that_auto_denies(domain, ada_file):
    ada = connect(connection_file=ada_file)
    submission = submit_plan(ada, train_xray_plan, inputs=split_assets(ada, "xray", "train"),
                             constants={"config": TrainingPlan(epochs=1).config(),
                                        "initial_weights": {}}, reason="plain model")
    shown = domain.cli("review", "show", submission.request_id)
    assert "VIOLATES" in shown and "dataset xray requires differential privacy" in shown
    assert f"{submission.request_id}  {submission.func_name}  denied" in domain.cli(
        "review", "auto", "--approve-compliant")


def test_dp_evaluation_releases_metrics_of_noisy_counts_only(domain, grace_file):
    grace = connect(connection_file=grace_file)
    submission = submit_evaluation(grace, 1.0)
    domain.cli("review", "approve", submission.request_id)
    result = run_approved(grace, submission)
    assert set(result) == {"metrics", "privacy"}
    assert set(result["metrics"]) == {"accuracy", "sensitivity", "specificity", "auc", "roc",
                                      "n_samples"}
    assert 0.0 <= result["metrics"]["auc"] <= 1.0 and result["privacy"]["epsilon"] == 1.0
    # the exact counts never left: the released total is the noisy one (80 test images)
    assert result["metrics"]["n_samples"] != 80 or result["metrics"]["accuracy"] not in (
        0.0, 1.0)


def test_over_budget_is_denied_and_two_runs_at_once_cannot_both_spend_the_rest(domain,
                                                                               grace_file):
    grace = connect(connection_file=grace_file)
    first = submit_evaluation(grace, 8.0)  # 1 and 8 compose to less than her 10
    domain.cli("review", "approve", first.request_id)
    run_approved(grace, first)
    over = submit_evaluation(grace, 8.0)
    shown = domain.cli("review", "show", over.request_id)
    assert "over budget" in shown and "VIOLATES" in shown
    assert f"{over.request_id}  {over.func_name}  denied" in domain.cli("review", "auto")

    # grant just enough for one more ε 8 release, not for two
    spent = [Mechanism(**r.mechanism.to_dict()) for r in ledger_of(domain).account(
        OTHER_RESEARCHER, "xray", delta=DELTA).releases if r.status == "charged"]
    eight = gaussian_count_mechanism(target_epsilon=8.0, delta=DELTA)
    one, two = epsilon(spent + [eight], DELTA), epsilon(spent + [eight, eight], DELTA)
    grant = round((one + two) / 2 - 10.0, 3)
    domain.cli("privacy", "grant", OTHER_RESEARCHER, "--dataset", "xray", "--epsilon",
               str(grant), "--reason", "ethics board amendment 4")
    assert [e for e in domain.admin.audit(action="privacy.grant")
            if e["target"] == OTHER_RESEARCHER]
    racing = [submit_evaluation(grace, 8.0) for _ in range(2)]
    for submission in racing:  # each fits alone, so each is vetted and approved
        domain.cli("review", "approve", submission.request_id)
    outcomes: list = [None, None]

    def run(index: int) -> None:
        try:
            outcomes[index] = run_approved(connect(connection_file=grace_file), racing[index])
        except Exception as exc:  # the withheld one
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    released = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(released) == 1 and len(refused) == 1, outcomes
    assert "privacy:" in str(refused[0]) and "left of" in str(refused[0])
    account = ledger_of(domain).account(OTHER_RESEARCHER, "xray", delta=DELTA)
    assert account.spent == pytest.approx(one)
    assert account.spent <= 10.0 + grant


def test_the_privacy_routes_check_who_asks(domain, ada_file):
    from common.secure_files import read_json

    ada_token = read_json(ada_file)["token"]
    headers = {"Authorization": f"Bearer {ada_token}"}
    assert requests.get(f"{domain.url}/pneumosyft/privacy", headers=headers,
                        timeout=10).status_code == 403
    assert requests.post(f"{domain.url}/pneumosyft/privacy/{RESEARCHER}/grant", headers=headers,
                         json={"dataset": "xray", "epsilon": 50, "reason": "me"},
                         timeout=10).status_code == 403
    owner, _ = domain.admin.issue_token(DATA_OWNER, ttl="1h")
    owner_headers = {"Authorization": f"Bearer {owner}"}
    assert requests.get(f"{domain.url}/pneumosyft/privacy", headers=owner_headers,
                        timeout=10).status_code == 200
    assert requests.post(f"{domain.url}/pneumosyft/privacy/{RESEARCHER}/grant",
                         headers=owner_headers, json={"dataset": "xray", "epsilon": 1,
                                                      "reason": "x"},
                         timeout=10).status_code == 403  # granting is the admin's
    with pytest.raises(Exception) as refused:
        domain.cli("privacy", "grant", RESEARCHER, "--dataset", "xray", "--epsilon", "-1",
                   "--reason", "negative")
    assert "epsilon must be a number above 0" in str(refused.value)


def _metrics(domain, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{domain.url}/pneumosyft/metrics", headers=headers, timeout=10)


def _sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from the Prometheus text (0 when the series is absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_metrics_count_what_the_audit_log_saw_and_only_an_auditor_reads_them(domain,
                                                                              ada_file):
    from common.secure_files import read_json

    admin, _ = domain.admin.issue_token(ADMIN, ttl="1h")
    before = _metrics(domain, admin)
    assert before.status_code == 200 and before.headers["content-type"].startswith(
        "text/plain")
    for token in (None, "not-a-token"):  # two refusals at the gate, counted
        assert _metrics(domain, token).status_code == 401
    assert _metrics(domain, read_json(ada_file)["token"]).status_code == 403
    after = _metrics(domain, admin).text
    refused = (_sample(after, "pneumosyft_gate_refusals_total", reason="invalid token")
               - _sample(before.text, "pneumosyft_gate_refusals_total", reason="invalid token"))
    assert refused == 2
    assert _sample(after, "pneumosyft_http_responses_total", status="401") >= 2
    assert _sample(after, "pneumosyft_http_responses_total", status="403") >= 1
    # the earlier tests' runs and approvals, and the ledger's ε, per dataset
    ledger = ledger_of(domain)
    spent = sum(ledger.account(email, "xray", delta=DELTA).spent
                for email, dataset in ledger.owners() if dataset == "xray")
    assert spent > 0
    assert _sample(after, "pneumosyft_privacy_epsilon_spent", dataset="xray") == \
        pytest.approx(spent)
    assert _sample(after, "pneumosyft_privacy_accounts", dataset="xray") == sum(
        dataset == "xray" for _, dataset in ledger.owners())
    assert _sample(after, "pneumosyft_sandbox_runs_total", outcome="ok") >= 1
    assert _sample(after, "pneumosyft_sandbox_run_seconds_count") == _sample(
        after, "pneumosyft_sandbox_runs_total", outcome="ok")  # a finished run's duration
    assert _sample(after, "pneumosyft_approvals_total", outcome="approved") >= 1
    # no label names a researcher, a request or a token
    assert RESEARCHER not in after and OTHER_RESEARCHER not in after


def test_the_ledger_survives_a_restart(domain, ada_file):
    before = my_budget(ada_file)
    domain.stop()
    domain.start()
    after = my_budget(ada_file)
    assert [(a["dataset"], a["spent"], a["releases"]) for a in after] == \
        [(a["dataset"], a["spent"], a["releases"]) for a in before]
    assert before and before[0]["releases"] >= 1
