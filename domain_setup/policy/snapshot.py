"""The policy files a domain enforces, and its federation, as one validated snapshot.

A domain loads ``permissions.yaml``, ``approval.yaml``, ``accounts.yaml`` and
``privacy.yaml`` (optional: without it no dataset has privacy rules, and DP plans are
refused) from its policy folder once, at start (a malformed file stops the start with
``file:line: reason``), into a `DomainPolicies` snapshot with a digest of the
files' bytes. Edited files take effect only on ``python -m domain_setup policies
reload``, which validates them and swaps the snapshot atomically: the gate and
the reviewer always decide on the same snapshot. The reviewer, in the admin's
process, checks that its own reading of the files has the digest the domain
has in force, and refuses to review on rules the domain does not enforce.

    policies = DomainPolicies.load(Path("policies"))
    policies.permissions.role_may("data_scientist", "submit_code")     # True
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domain_setup import PROJECT_ROOT
from domain_setup.policy.accounts import load_accounts
from domain_setup.policy.approval import ApprovalRules, load_approval_rules
from domain_setup.policy.federation import FederationMembers, load_members, save_members
from domain_setup.policy.permissions import Permissions
from domain_setup.policy.privacy import PrivacyRules, load_privacy_rules

PROJECT_POLICIES = PROJECT_ROOT / "policies"
POLICY_FILES = ("permissions.yaml", "approval.yaml", "accounts.yaml", "privacy.yaml")


def policy_digest(directory: Path) -> str:
    """sha256 over the names and bytes of the policy files (a missing file counts as empty)."""
    digest = hashlib.sha256()
    for name in POLICY_FILES:
        path = directory / name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.exists() else b"")
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class DomainPolicies:
    """The policy files of a domain, parsed and validated, and their digest."""

    directory: Path
    permissions: Permissions
    approval: ApprovalRules
    accounts: list
    digest: str
    privacy: PrivacyRules = field(default_factory=lambda: PrivacyRules({}))
    federation: FederationMembers = field(default_factory=FederationMembers)
    state_root: Path | None = None  # where the federation's member list is kept
    loaded_at: float = field(default_factory=time.time)

    @classmethod
    def load(cls, directory: Path, state_root: Path | None = None) -> "DomainPolicies":
        """Read and validate the files of `directory` and the federation members kept in
        `state_root` (PolicyError on the first problem)."""
        digest = policy_digest(directory)
        return cls(directory=directory, state_root=state_root,
                   federation=load_members(state_root) if state_root else FederationMembers(),
                   permissions=Permissions.from_file(directory / "permissions.yaml"),
                   approval=load_approval_rules(directory / "approval.yaml"),
                   accounts=load_accounts(directory / "accounts.yaml"),
                   digest=digest,
                   privacy=(load_privacy_rules(directory / "privacy.yaml")
                            if (directory / "privacy.yaml").exists() else PrivacyRules({})))

    def groups_of(self, email: str) -> tuple[str, ...]:
        """The accounts.yaml groups of `email` (none for an unknown email)."""
        for account in self.accounts:
            if account.email.lower() == email.lower():
                return tuple(account.groups)
        return ()

    def describe(self) -> dict:
        """What the domain reports about the snapshot in force."""
        return {"directory": str(self.directory), "digest": self.digest,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))}


class LivePolicies:
    """The snapshot a running domain enforces; `reload()` swaps it for a validated new one."""

    def __init__(self, policies: DomainPolicies):
        self._current = policies
        self._lock = threading.Lock()

    @property
    def current(self) -> DomainPolicies:
        return self._current

    def reload(self) -> DomainPolicies:
        """Validate the files again and put them in force; on error the old snapshot stays."""
        with self._lock:
            self._current = DomainPolicies.load(self._current.directory,
                                                self._current.state_root)
            return self._current

    def set_members(self, members: FederationMembers) -> DomainPolicies:
        """Keep `members` as the federation (in the state directory) and put them in force."""
        with self._lock:
            if self._current.state_root is None:
                raise ValueError("this snapshot has no state directory to keep members in")
            save_members(self._current.state_root, members)
            self._current = dataclasses.replace(self._current, federation=members)
            return self._current

    def groups_of(self, email: str) -> tuple[str, ...]:
        return self._current.groups_of(email)


def policies_dir(config: Any) -> Path:
    """The domain's policy folder: `--policies DIR` at first start, else ./policies."""
    return Path(config.extra.get("policies_dir") or PROJECT_POLICIES)


def load_domain_policies(config: Any, state_root: Path | None = None) -> DomainPolicies:
    """Load and validate the policy files of the domain configured by `config` (and the
    federation members kept in its state directory `state_root`)."""
    return DomainPolicies.load(policies_dir(config), state_root)
