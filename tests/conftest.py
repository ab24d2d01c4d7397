"""Shared fixtures: real domains on loopback ports, driven through the real CLI.

A session-wide hospital domain is started once (small synthetic set at 28 px,
accounts from policies/accounts.yaml) and stopped at the end of the session.
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

from demos.local_domain import LocalDomain  # noqa: E402

ACCOUNTS_YAML = PROJECT_ROOT / "policies" / "accounts.yaml"
RESEARCHER = "ada@pneumosyft-research.org"
OTHER_RESEARCHER = "grace@lung-imaging-lab.ac.uk"
DATA_OWNER = "owner@stmary-hospital.org"
SMALL_SET = ("--n", "400", "--size", "28")


def start_hospital(directory: Path, name: str, *, upload: bool = True,
                   extra_args: tuple[str, ...] = ()) -> LocalDomain:
    """Start a domain in `directory`, upload a small synthetic set and apply the accounts."""
    domain = LocalDomain.start_new(name, directory, extra_args=extra_args)
    try:
        if upload:
            domain.cli("upload", "synthetic", "--name", "xray", *SMALL_SET)
        domain.cli("accounts", "apply", str(ACCOUNTS_YAML))
    except BaseException:
        domain.stop()
        raise
    return domain


@pytest.fixture(scope="session")
def hospital(tmp_path_factory):
    """One running hospital domain for the whole test session."""
    domain = start_hospital(tmp_path_factory.mktemp("hospital"), "Test General")
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
