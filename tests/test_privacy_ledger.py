"""The privacy ledger and privacy.yaml: arithmetic against the accountant, budgets, grants,
refunds, two processes spending the last of a budget at once, and a `kill -9` before
and after a charge commits. Real SQLite files, real processes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common.dp_accounting import (Mechanism, dp_sgd_mechanism, epsilon,
                                  gaussian_count_mechanism)
from common.errors import PolicyError
from domain_setup.policy.privacy import load_privacy_rules
from domain_setup.server.privacy_ledger import BudgetExceeded, PrivacyLedger

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ADA = "ada@pneumosyft-research.org"
DELTA = 1e-5


def train_release(target: float) -> Mechanism:
    return dp_sgd_mechanism(target_epsilon=target, delta=DELTA, n_samples=2400, batch_size=64,
                            epochs=2)


def test_a_mechanism_costs_what_it_was_sized_for():
    for target in (1.0, 3.0, 8.0):
        assert target * 0.98 <= epsilon([train_release(target)], DELTA) <= target
    count = gaussian_count_mechanism(target_epsilon=0.5, delta=DELTA)
    assert 0.49 <= epsilon([count], DELTA) <= 0.5 and count.sample_rate == 1.0


def test_the_total_is_the_accountants_composition_beside_the_plain_sum(tmp_path):
    ledger = PrivacyLedger(tmp_path / "privacy.sqlite3")
    mechanisms = [train_release(3.0), train_release(2.0),
                  gaussian_count_mechanism(target_epsilon=0.5, delta=DELTA)]
    for number, (mechanism, eps) in enumerate(zip(mechanisms, (3.0, 2.0, 0.5))):
        ledger.charge(ADA, "xray", request_id=f"r{number}", kind="train", mechanism=mechanism,
                      epsilon=eps, delta=DELTA, budget=10.0)
    account = ledger.account(ADA, "xray", delta=DELTA)
    assert account.spent == pytest.approx(epsilon(mechanisms, DELTA))
    assert account.spent_sum == pytest.approx(5.5)
    assert account.spent < account.spent_sum  # composition is tighter than adding
    assert len(account.releases) == 3 and account.left(10.0) == pytest.approx(10 - account.spent)
    assert ledger.account("grace@lung-imaging-lab.ac.uk", "xray", delta=DELTA).spent == 0
    assert stat.S_IMODE(os.stat(ledger.path).st_mode) == 0o600


def test_over_budget_is_refused_and_writes_nothing_and_a_grant_or_refund_makes_room(tmp_path):
    ledger = PrivacyLedger(tmp_path / "privacy.sqlite3")
    first = ledger.charge(ADA, "xray", request_id="a", kind="train", mechanism=train_release(3),
                          epsilon=3, delta=DELTA, budget=3.5)
    with pytest.raises(BudgetExceeded) as refused:  # composed, two cost about 3.64
        ledger.charge(ADA, "xray", request_id="b", kind="train", mechanism=train_release(3),
                      epsilon=3, delta=DELTA, budget=3.5)
    assert str(refused.value).startswith(f"{ADA} has ε 0.5")  # about 0.51 left of 3.5
    assert len(ledger.account(ADA, "xray", delta=DELTA).releases) == 1
    ledger.grant(ADA, "xray", 2.0, reason="ethics board, amendment 3", granted_by="admin")
    ledger.charge(ADA, "xray", request_id="b", kind="train", mechanism=train_release(3),
                  epsilon=3, delta=DELTA, budget=3.5)  # fits in 3.5 + 2
    ledger.refund(first.id, "result withheld")
    account = ledger.account(ADA, "xray", delta=DELTA)
    assert account.granted == 2.0 and account.spent == pytest.approx(
        epsilon([train_release(3)], DELTA))
    assert [r.status for r in account.releases] == ["refunded", "charged"]
    with pytest.raises(ValueError):
        ledger.grant(ADA, "xray", 1.0, reason=" ", granted_by="admin")


def test_a_refunded_release_makes_room_and_an_interrupted_one_does_not(tmp_path):
    # the charge composes what counts, as the quote does: refunded ε is not spent
    ledger = PrivacyLedger(tmp_path / "privacy.sqlite3")
    first = ledger.charge(ADA, "xray", request_id="a", kind="train", mechanism=train_release(3),
                          epsilon=3, delta=DELTA, budget=3.5)
    ledger.refund(first.id, "refused before any data entered")
    ledger.charge(ADA, "xray", request_id="b", kind="train", mechanism=train_release(3),
                  epsilon=3, delta=DELTA, budget=3.5)  # a and b together would be about 3.64
    assert ledger.mark_interrupted("b")
    with pytest.raises(BudgetExceeded):  # b's data entered its sandbox: its ε stays spent
        ledger.charge(ADA, "xray", request_id="c", kind="train", mechanism=train_release(3),
                      epsilon=3, delta=DELTA, budget=3.5)


CHARGER = textwrap.dedent("""
    import sys, time, os
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from common.dp_accounting import Mechanism
    from domain_setup.server.privacy_ledger import BudgetExceeded, PrivacyLedger
    ledger = PrivacyLedger({path!r})
    mechanism = Mechanism(**{mechanism!r})
    from common.dp_accounting import epsilon
    epsilon([mechanism], {delta!r})  # the accountant imported before the race
    print("ready", flush=True)
    while not os.path.exists({go!r}):
        time.sleep(0.001)
    try:
        ledger.charge({email!r}, "xray", request_id=sys.argv[1], kind="train",
                      mechanism=mechanism, epsilon=3.0, delta={delta!r}, budget=3.5)
        print("charged", flush=True)
    except BudgetExceeded:
        print("exceeded", flush=True)
""")


def test_two_processes_cannot_both_spend_the_last_of_a_budget(tmp_path):
    path, go = tmp_path / "privacy.sqlite3", tmp_path / "go"
    PrivacyLedger(path)
    script = CHARGER.format(root=str(PROJECT_ROOT), path=str(path), go=str(go), email=ADA,
                            delta=DELTA, mechanism=train_release(3.0).to_dict())
    for attempt in range(2):
        go.unlink(missing_ok=True)
        path.unlink()
        PrivacyLedger(path)
        runs = [subprocess.Popen([sys.executable, "-c", script, f"r{n}"], stdout=subprocess.PIPE,
                                 text=True) for n in range(2)]
        assert [run.stdout.readline().strip() for run in runs] == ["ready", "ready"]
        go.touch()  # both charge at once
        outputs = sorted(run.communicate(timeout=120)[0].strip() for run in runs)
        assert outputs == ["charged", "exceeded"], outputs
    assert len(PrivacyLedger(path).account(ADA, "xray", delta=DELTA).releases) == 1


KILLED = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from common.dp_accounting import Mechanism
    from domain_setup.server.privacy_ledger import PrivacyLedger
    ledger = PrivacyLedger({path!r})
    mechanism = Mechanism(**{mechanism!r})
    if sys.argv[1] == "committed":
        ledger.charge({email!r}, "xray", request_id="kept", kind="train", mechanism=mechanism,
                      epsilon=3.0, delta={delta!r}, budget=10.0)
        print("committed", flush=True)
    else:
        with ledger._transaction() as db:
            db.execute("INSERT INTO releases (email, dataset, request_id, kind, epsilon, delta, "
                       "mechanism, status, at) VALUES (?, 'xray', 'lost', 'train', 3, ?, '{{}}', "
                       "'charged', 0)", ({email!r}, {delta!r}))
            print("inside", flush=True)
            time.sleep(60)
    time.sleep(60)
""")


def test_a_charge_survives_kill_9_and_an_uncommitted_one_vanishes(tmp_path):
    path = tmp_path / "privacy.sqlite3"
    script = KILLED.format(root=str(PROJECT_ROOT), path=str(path), email=ADA, delta=DELTA,
                           mechanism=train_release(3.0).to_dict())
    for mode in ("committed", "uncommitted"):
        child = subprocess.Popen([sys.executable, "-c", script, mode], stdout=subprocess.PIPE,
                                 text=True)
        try:
            assert child.stdout.readline().strip() in ("committed", "inside")
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    releases = PrivacyLedger(path).account(ADA, "xray", delta=DELTA).releases
    assert [r.request_id for r in releases] == ["kept"]
    # the killed writer's lock is gone: the ledger takes charges again at once
    PrivacyLedger(path).charge(ADA, "xray", request_id="after", kind="train",
                               mechanism=train_release(1.0), epsilon=1.0, delta=DELTA,
                               budget=10.0)


# -- privacy.yaml -------------------------------------------------------------------------
def test_the_projects_privacy_yaml_loads_and_budgets_match_like_dataset_rules():
    rules = load_privacy_rules(PROJECT_ROOT / "policies" / "privacy.yaml")
    xray = rules.dataset("xray")
    assert xray.delta == 1e-5 and xray.min_samples_per_release >= 1
    assert xray.budget_for(ADA, ("pneumonia-study",), "data_scientist") == 20.0  # by email
    assert xray.budget_for("grace@lung-imaging-lab.ac.uk", ("pneumonia-study",),
                           "data_scientist") == 10.0  # by group
    assert xray.budget_for("eve@example-lab.org", (), "data_scientist") == 3.0  # by role
    assert xray.budget_for("eve@example-lab.org", (), "data_owner") == 0.0  # nobody listed
    assert rules.dataset("unknown") is None


GOOD = """datasets:
  xray:
    delta: 1.0e-5
    max_epsilon_per_request: 8
    min_samples_per_release: 100
    budgets:
      - groups: [pneumonia-study]
        epsilon: 10
"""


@pytest.mark.parametrize("change, message", [
    (("delta: 1.0e-5", "delta: 0.5"), ":3: δ must be above 0 and below 0.01, got 0.5"),
    (("epsilon: 10", "epsilon: -1"), ":8: ε must be above 0 and at most 100, got -1"),
    (("max_epsilon_per_request: 8", "max_epsilon_per_request: lots"),
     ":4: expected a number, got a string ('lots')"),
    (("      - groups: [pneumonia-study]\n", "      -\n"), ":8: a budget names its users, "
                                                        "groups or roles"),
    (("    budgets:", "    require_dp: yes please\n    budgets:"), ":6: expected true or false"),
    (("    delta: 1.0e-5\n", ""), ":3: missing required key 'delta'"),
    (("    budgets:", "    budget:"), ":6: unknown key 'budget'"),
])
def test_privacy_yaml_errors_name_the_file_and_line(tmp_path, change, message):
    path = tmp_path / "privacy.yaml"
    old, new = change
    assert old in GOOD
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(PolicyError) as refused:
        load_privacy_rules(path)
    assert message in str(refused.value) and "privacy.yaml" in str(refused.value), \
        str(refused.value)


@pytest.mark.parametrize("n_samples", [160, 170])
def test_opacus_accounts_exactly_what_the_domain_sized_for(n_samples):
    """The domain sizes the noise with its own accountant; the run, accounted by Opacus,
    must not cost more (steps per epoch as Opacus takes them: ceil(n / batch))."""
    from common.dp_accounting import dp_sgd_mechanism
    from common.dp_training import train_private
    from datasets.xray import load_synthetic

    data = load_synthetic(n=220, size=28)
    images, labels = data.train.images[:n_samples], data.train.labels[:n_samples]
    mechanism = dp_sgd_mechanism(target_epsilon=1.0, delta=DELTA, n_samples=n_samples,
                                 batch_size=32, epochs=1)
    result = train_private(images, labels, noise_multiplier=mechanism.noise_multiplier,
                           max_grad_norm=1.0, delta=DELTA, epochs=1, batch_size=32)
    assert result["steps"] == mechanism.steps
    assert 0.98 <= result["epsilon"] <= 1.0
