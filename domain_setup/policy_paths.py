"""Which policy files a domain enforces, loaded once at start (malformed files stop the start)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain_setup.permissions import Permissions
from domain_setup.policy_files import load_accounts, load_approval_rules

PROJECT_POLICIES = Path(__file__).resolve().parent.parent / "policies"


@dataclass
class DomainPolicies:
    """The three policy files of a domain, parsed and validated."""

    directory: Path
    permissions: Permissions
    approval: Any
    accounts: list

    def groups_of(self, email: str) -> tuple[str, ...]:
        for account in self.accounts:
            if account.email.lower() == email.lower():
                return tuple(account.groups)
        return ()


def policies_dir(config: Any) -> Path:
    """The domain's policy folder: `--policies DIR` at first start, else ./policies."""
    return Path(config.extra.get("policies_dir") or PROJECT_POLICIES)


def load_domain_policies(config: Any) -> DomainPolicies:
    """Load and validate permissions.yaml, approval.yaml and accounts.yaml."""
    directory = policies_dir(config)
    return DomainPolicies(
        directory=directory,
        permissions=Permissions.from_file(directory / "permissions.yaml"),
        approval=load_approval_rules(directory / "approval.yaml"),
        accounts=load_accounts(directory / "accounts.yaml"),
    )
