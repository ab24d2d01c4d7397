"""``accounts.yaml``: who has an account on the domain, with which role and groups.

    accounts = load_accounts("policies/accounts.yaml")
    accounts[0].email, accounts[0].role, accounts[0].groups
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from domain_setup.policy.roles import ROLES
from domain_setup.policy.schema import EMAIL, TEXT, ListOf, Struct, choice, load_policy, names_list


@dataclass(frozen=True)
class Account:
    """One person with an account on the domain (no password: see admin/accounts.py)."""

    email: str
    name: str
    role: str
    institution: str | None = None
    groups: tuple[str, ...] = ()


ACCOUNTS_SCHEMA = Struct(required={
    "accounts": ListOf(
        Struct(required={"name": TEXT, "email": EMAIL, "role": choice(ROLES, "role")},
               optional={"institution": TEXT, "groups": names_list(what="group")}),
        unique=lambda account: account["email"].lower(), unique_what="email"),
})


def load_accounts(path: str | Path) -> list[Account]:
    """The accounts of accounts.yaml, in file order."""
    data = load_policy(path, ACCOUNTS_SCHEMA)
    return [Account(email=a["email"], name=a["name"], role=a["role"],
                    institution=a.get("institution"), groups=tuple(a.get("groups", ())))
            for a in data["accounts"]]
