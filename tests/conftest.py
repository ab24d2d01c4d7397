"""Shared fixtures: real domains on loopback ports, driven through the real CLI.

A session-wide hospital domain is started once (small synthetic set at 28 px,
accounts from policies/accounts.yaml, the demos' policy folder in which no dataset
requires DP) and stopped at the end of the session; tests of the shipped policies start
their own.
`LocalDomain.cli` and `LocalDomain.attempt` run the CLI's `main` in the test process
(syft is imported once); `LocalDomain.run` is a process of its own, for the checks of
exit codes and error output seen from outside.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from demos.local_domain import TRUSTED, TRUSTED_POLICIES, LocalDomain  # noqa: E402

ACCOUNTS_YAML = PROJECT_ROOT / "policies" / "accounts.yaml"
RESEARCHER = "ada@pneumosyft-research.org"
OTHER_RESEARCHER = "grace@lung-imaging-lab.ac.uk"
DATA_OWNER = "owner@stmary-hospital.org"
ADMIN = "admin@pneumosyft-hospital.org"  # policies/accounts.yaml's root admin
SMALL_SET = ("--n", "400", "--size", "28")


def start_hospital(directory: Path, name: str, *, upload: bool = True,
                   extra_args: tuple[str, ...] = TRUSTED) -> LocalDomain:
    """Start a domain in `directory`, upload a small synthetic set and apply the accounts.
    Its policies are the demos' (no DP required: plain training and evaluation run) unless
    `extra_args` names others (``()``: the shipped policies/, which require DP)."""
    domain = LocalDomain.start_new(name, directory, extra_args=extra_args)
    try:
        if upload:
            domain.cli("upload", "synthetic", "--name", "xray", *SMALL_SET)
        domain.cli("accounts", "apply", str(ACCOUNTS_YAML))
    except BaseException:
        domain.stop()
        raise
    return domain


TUTORIAL_DATASET = "MNIST"  # PySyft's tutorial dataset (test_stock_tutorial.py)


def session_policies(directory: Path) -> Path:
    """The session hospital's policy folder: the demos' (no DP required), plus a dataset rule
    that lets the study group use the dataset PySyft's tutorial uploads."""
    import shutil

    shutil.copytree(TRUSTED_POLICIES, directory)  # the links become the files they name
    permissions = directory / "permissions.yaml"
    permissions.write_text(permissions.read_text().replace(
        "  aggregation:", f"  {TUTORIAL_DATASET}:\n    groups: [pneumonia-study]\n  aggregation:",
        1))
    return directory


@pytest.fixture(scope="session")
def hospital(tmp_path_factory):
    """One running hospital domain for the whole test session."""
    root = tmp_path_factory.mktemp("hospital")
    domain = start_hospital(root / "state", "Test General",
                            extra_args=("--policies", str(session_policies(root / "policies"))))
    yield domain
    domain.stop()


@pytest.fixture(scope="session")
def ada_connection(hospital):
    """Ada's connection file (url, email, password, token) for the session hospital."""
    return hospital.researcher_file(RESEARCHER)


@pytest.fixture(scope="session")
def ada(ada_connection):
    """Ada's logged-in syft client."""
    from scientist import connect

    return connect(connection_file=ada_connection)


FEDERATION = ("St Mary", "Royal Infirmary", "County General")
FEDERATED_SET = (600, 28)  # images in all and px: 160 training and 40 test images each


@pytest.fixture(scope="session")
def federation_domains(tmp_path_factory):
    """Three small hospitals for the session (one IID partition each of 600 synthetic
    X-rays at 28 px, the demos' policies), each an aggregation party listing the other two
    as members: test_federated.py and notebook 04 share them."""
    from demos.federated import start_hospitals

    domains = list(start_hospitals(tmp_path_factory.mktemp("federation"), *FEDERATED_SET,
                                   FEDERATION, partitionings={"IID": None}).values())
    yield domains
    for domain in domains:
        domain.stop()


@pytest.fixture(scope="module")
def federation(federation_domains):
    """The session's three hospitals, Ada's handle on each (`scientist.federated.join`),
    and their admins' reviewers, by hospital name."""
    from domain_setup.admin import AdminClient
    from scientist.federated import join

    domains = federation_domains
    reviewers = {d.name: AdminClient(d.state).reviewer for d in domains}
    hospitals = [join(str(d.researcher_file(RESEARCHER))) for d in domains]
    return domains, hospitals, reviewers


def approve_with(reviewers: dict):
    """An approver (scientist.federated) for which each hospital's reviewer approves."""
    return lambda hospital, submission: reviewers[hospital.name].approve(submission.request_id)
