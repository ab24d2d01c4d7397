"""Policy YAML files: the shipped ones load; every malformed one is a one-line
`file:line: reason` PolicyError; permission decisions follow permissions.yaml."""

from __future__ import annotations

import importlib.util
import re
import textwrap
from pathlib import Path

import pytest

from common.errors import PolicyError
from domain_setup.policy.roles import ROLES as ROLE_ORDER
from domain_setup.policy.roles import role_at_least
from domain_setup.policy.accounts import load_accounts
from domain_setup.policy.approval import load_approval_rules
from domain_setup.policy.permissions import (
    ACTIONS,
    SYFT_PATH_ACTIONS,
    Permissions,
    action_for_path,
    load_permissions,
)
from domain_setup.policy.schema import display_path

POLICIES = Path(__file__).resolve().parent.parent / "policies"

ACCOUNTS_OK = """\
accounts:
  - name: Ada Lovelace
    email: ada@pneumosyft-research.org
    role: data_scientist
    groups: [study]
"""

PERMISSIONS_OK = """\
roles:
  data_scientist: [list_datasets, read_mock, submit_code]
  data_owner: [list_datasets, upload_dataset]
  admin: [manage_accounts, change_settings]
datasets:
  "*":
    roles: [admin]
  xray:
    users: [Grace@Lung-Imaging-Lab.ac.uk]
    groups: [study]
syft_paths:
  data_scientist: [dataset.get_all, code.call]
  data_owner: [dataset.get_all, request.apply]
  admin: ["*"]
"""


def _write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _error(loader, path: Path) -> tuple[int, str]:
    """(line, reason) of the PolicyError raised by `loader(path)`."""
    with pytest.raises(PolicyError) as caught:
        loader(path)
    message = str(caught.value)
    assert "\n" not in message
    match = re.fullmatch(re.escape(display_path(path)) + r":(\d+): (.+)", message)
    assert match, f"not 'file:line: reason': {message}"
    return int(match.group(1)), match.group(2)


# --- the shipped policies ------------------------------------------------------------------

def test_shipped_accounts_load():
    accounts = {a.email: a for a in load_accounts(POLICIES / "accounts.yaml")}
    assert accounts["ada@pneumosyft-research.org"].name == "Ada Lovelace"
    assert accounts["ada@pneumosyft-research.org"].role == "data_scientist"
    assert accounts["grace@lung-imaging-lab.ac.uk"].role == "data_scientist"
    assert accounts["owner@stmary-hospital.org"].role == "data_owner"
    assert {a.role for a in accounts.values()} == {"data_scientist", "data_owner", "admin"}
    text = (POLICIES / "accounts.yaml").read_text().lower()
    assert "password:" not in text


def test_shipped_permissions_are_the_safe_defaults():
    permissions = Permissions.from_file(POLICIES / "permissions.yaml")
    assert permissions.allow_signup is False
    for role in ROLE_ORDER:
        assert not permissions.role_may(role, "enable_signup")
    scientist = {a for a in ACTIONS if permissions.role_may("data_scientist", a)}
    assert scientist == {"list_datasets", "read_mock", "submit_code"}
    owner = {a for a in ACTIONS if permissions.role_may("data_owner", a)}
    assert owner == scientist | {"upload_dataset", "approve_requests",
                                 "read_others_requests", "read_private"}
    assert all(permissions.role_may("admin", a) for a in ACTIONS)
    assert permissions.may_use_dataset("ada@pneumosyft-research.org", ("pneumonia-study",),
                                       "data_scientist", "xray")


def test_shipped_approval_rules_load():
    rules = load_approval_rules(POLICIES / "approval.yaml")
    assert rules.max_epochs >= 3 and "small_cnn" in rules.allowed_models
    assert "common.training.train" in rules.declassifying_calls
    assert {"open", "exec", "eval"} <= rules.forbidden_builtins
    assert rules.approve_compliant is False  # shipped: every request waits for an admin


def test_automatic_approval_is_true_or_false_nothing_else(tmp_path):
    shipped = (POLICIES / "approval.yaml").read_text()
    on = _write(tmp_path, shipped.replace("approve_compliant: false", "approve_compliant: true"))
    assert load_approval_rules(on).approve_compliant is True
    text = shipped.replace("approve_compliant: false", "approve_compliant: \"yes please\"")
    line, reason = _error(load_approval_rules, _write(tmp_path, text))
    assert "approve_compliant" in text.splitlines()[line - 1]
    assert reason.startswith("expected true or false")


# --- malformed files ------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError, match=re.escape(f"{display_path(path)}: policy file not found")):
        load_accounts(path)


def test_unreadable_file(tmp_path):
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_accounts(tmp_path)  # a directory


def test_syntax_error_names_its_line(tmp_path):
    path = _write(tmp_path, """\
        accounts:
          - name: Ada
            email: ada@pneumosyft-research.org
            role: [data_scientist
        """)
    line, reason = _error(load_accounts, path)
    assert line in (4, 5) and reason.startswith("YAML syntax error")


def test_unknown_key_is_a_typo(tmp_path):
    path = _write(tmp_path, ACCOUNTS_OK.replace("    groups:", "    grops:"))
    assert _error(load_accounts, path) == (
        5, "unknown key 'grops' (expected one of: name, email, role, institution, groups)")


def test_wrong_type(tmp_path):
    path = _write(tmp_path, ACCOUNTS_OK.replace("groups: [study]", "groups: study"))
    assert _error(load_accounts, path) == (5, "expected a list, got the value 'study'")


def test_yes_no_is_not_a_string(tmp_path):
    path = _write(tmp_path, ACCOUNTS_OK.replace("Ada Lovelace", "no"))
    line, reason = _error(load_accounts, path)
    assert line == 2 and "expected a string, got true or false ('no') (quote it)" == reason


def test_wrong_top_level_type(tmp_path):
    path = _write(tmp_path, "- accounts\n")
    assert _error(load_accounts, path) == (1, "expected a mapping at the top level, got a list")


def test_empty_file(tmp_path):
    assert _error(load_accounts, _write(tmp_path, "# nothing\n"))[1].startswith("the file is empty")


def test_duplicate_key(tmp_path):
    path = _write(tmp_path, ACCOUNTS_OK.replace("    role: data_scientist",
                                                "    role: data_scientist\n    role: admin"))
    assert _error(load_accounts, path) == (5, "duplicate key 'role' (first at line 4)")


def test_missing_required_key(tmp_path):
    path = _write(tmp_path, ACCOUNTS_OK.replace("    role: data_scientist\n", ""))
    assert _error(load_accounts, path) == (2, "missing required key 'role'")


@pytest.mark.parametrize("email", ["x@hospital.local", "ada@localhost", "ada@lab.internal",
                                   "not-an-email", "ada@pneumosyft-research.o"])
def test_bad_email(tmp_path, email):
    path = _write(tmp_path, ACCOUNTS_OK.replace("ada@pneumosyft-research.org", email))
    line, reason = _error(load_accounts, path)
    assert line == 3 and reason.startswith(f"invalid email {email!r}")


def test_duplicate_email_ignores_case(tmp_path):
    second = ACCOUNTS_OK.split("\n", 1)[1].replace("ada@", "ADA@")
    path = _write(tmp_path, ACCOUNTS_OK + second)
    assert _error(load_accounts, path) == (
        6, "duplicate email 'ada@pneumosyft-research.org' (first at line 2)")


def test_unknown_role(tmp_path):
    path = _write(tmp_path, ACCOUNTS_OK.replace("role: data_scientist", "role: superuser"))
    line, reason = _error(load_accounts, path)
    assert line == 4 and reason.startswith("unknown role 'superuser' (known: data_scientist")


def test_unknown_role_in_permissions(tmp_path):
    path = _write(tmp_path, PERMISSIONS_OK.replace("  admin:", "  superuser:"))
    line, reason = _error(load_permissions, path)
    assert line == 4 and reason.startswith("unknown key 'superuser'")


def test_unknown_action(tmp_path):
    path = _write(tmp_path, PERMISSIONS_OK.replace("read_mock", "read_everything"))
    line, reason = _error(load_permissions, path)
    assert line == 2 and reason.startswith("unknown action 'read_everything' (known: ")


def test_boolean_is_not_an_integer(tmp_path):
    text = (POLICIES / "approval.yaml").read_text().replace("max_epochs: 20", "max_epochs: true")
    path = _write(tmp_path, text)
    line, reason = _error(load_approval_rules, path)
    assert text.splitlines()[line - 1].strip() == "max_epochs: true"
    assert reason == "expected an integer, got true or false ('true')"


def test_inconsistent_limits(tmp_path):
    text = (POLICIES / "approval.yaml").read_text().replace("min_batch_size: 16",
                                                            "min_batch_size: 4096")
    assert "min_batch_size 4096 is above" in _error(load_approval_rules, _write(tmp_path, text))[1]


@pytest.mark.parametrize("text,reason", [
    ("a: &x [1]\nb: *x\n", "aliases (*name) are not allowed"),
    ("accounts: !!python/object/apply:os.system [id]\n", "unsupported YAML tag"),
    ("base: &b {x: 1}\naccounts:\n  <<: *b\n", "aliases (*name) are not allowed"),
    ("accounts: []\n---\naccounts: []\n", "expected a single document"),
])
def test_yaml_features_refused(tmp_path, text, reason):
    assert reason in _error(load_accounts, _write(tmp_path, text))[1]


# --- permission decisions -------------------------------------------------------------------

@pytest.fixture
def permissions(tmp_path):
    return Permissions.from_file(_write(tmp_path, PERMISSIONS_OK))


def test_role_may(permissions):
    assert permissions.role_may("data_scientist", "submit_code")
    assert not permissions.role_may("data_scientist", "upload_dataset")
    assert not permissions.role_may("guest", "list_datasets")
    with pytest.raises(ValueError):
        permissions.role_may("admin", "fly")


def test_syft_paths_are_denied_unless_listed(permissions):
    assert permissions.role_may_call("data_scientist", "code.call")
    assert not permissions.role_may_call("data_scientist", "request.apply")
    assert not permissions.role_may_call("guest", "dataset.get_all")
    assert permissions.role_may_call("admin", "anything.at_all")  # "*"


def test_signup_needs_the_file_to_allow_it(tmp_path, permissions):
    assert not permissions.role_may("admin", "enable_signup")
    allowed = Permissions.from_file(_write(tmp_path, "allow_signup: true\n" + PERMISSIONS_OK))
    assert allowed.role_may("admin", "enable_signup")
    assert not allowed.role_may("data_scientist", "enable_signup")


def test_dataset_access_by_user_group_role_and_wildcard(permissions):
    assert permissions.may_use_dataset("grace@lung-imaging-lab.ac.uk", (), "data_scientist", "xray")
    assert permissions.may_use_dataset("eve@example-lab.org", ("study",), "data_scientist", "xray")
    assert permissions.may_use_dataset("root@pneumosyft-hospital.org", (), "admin", "other")
    assert not permissions.may_use_dataset("eve@example-lab.org", (), "data_scientist", "xray")
    assert not permissions.may_use_dataset("eve@example-lab.org", ("study",), "data_scientist",
                                           "other")


def test_role_order():
    assert role_at_least("admin", "data_scientist") and role_at_least("data_owner", "data_owner")
    assert not role_at_least("data_scientist", "data_owner")
    assert not role_at_least("guest", "data_scientist") and not role_at_least("admin", "root")


def test_syft_paths_map_to_actions():
    assert action_for_path("dataset.add") == "upload_dataset"
    assert action_for_path("user.create") == "manage_accounts"
    assert action_for_path("settings.allow_guest_signup") == "enable_signup"
    assert action_for_path("request.apply") == "approve_requests"
    assert action_for_path("code.request_code_execution") == "submit_code"
    assert action_for_path("dataset.get_all") == "list_datasets"
    assert action_for_path("code.call") is None  # left to syft's own checks
    assert set(SYFT_PATH_ACTIONS.values()) <= set(ACTIONS) | {"enable_signup"}


def test_mapped_syft_paths_exist_in_installed_syft():
    spec = importlib.util.find_spec("syft")
    if spec is None or not spec.origin:
        pytest.skip("syft is not installed")
    service_dir = Path(spec.origin).parent / "service"
    real = set()
    for source in service_dir.rglob("*.py"):
        real |= set(re.findall(r'@service_method\([^)]*?path="([^"]+)"', source.read_text(),
                               re.S))
    assert real, "no service methods found"
    assert sorted(set(SYFT_PATH_ACTIONS) - real) == []
