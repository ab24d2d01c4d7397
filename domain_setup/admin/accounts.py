"""`accounts apply`: make the domain's users match policies/accounts.yaml (idempotent).

Passwords never live in the repo: a new account's password comes from
``$PNEUMOSYFT_PASSWORD_<EMAIL>`` (email upper-cased, other characters as ``_``)
or is generated and kept in ``account_passwords.json`` (0600) in the state dir.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from common import syft_compat
from common.errors import DomainError
from common.secure_files import read_json, write_json_atomic
from domain_setup.policy.accounts import load_accounts
from domain_setup.state import StateDir, generate_password, validate_password

def password_env_name(email: str) -> str:
    return "PNEUMOSYFT_PASSWORD_" + re.sub(r"[^A-Z0-9]", "_", email.upper())


def stored_passwords(state: StateDir) -> dict[str, str]:
    if not state.account_passwords_path.exists():
        return {}
    return dict(read_json(state.account_passwords_path))


def account_password(state: StateDir, email: str) -> str:
    """The password of an account created by `accounts apply`."""
    passwords = stored_passwords(state)
    if email in passwords:
        return passwords[email]
    from_env = os.environ.get(password_env_name(email))
    if from_env:
        return from_env
    raise DomainError(f"no stored password for {email} in {state.account_passwords_path}")


def _new_password(email: str) -> tuple[str, bool]:
    from_env = os.environ.get(password_env_name(email))
    if from_env:
        return validate_password(from_env, what=password_env_name(email)), False
    return generate_password(), True


def apply_accounts(session, path: str | Path) -> list[dict]:
    """Create missing users, update changed roles/names; returns one row per account."""
    accounts = load_accounts(path)  # malformed file: error before any change
    client = session.client()
    existing = {user.email.lower(): user for user in client.api.services.user.get_all()}
    passwords = stored_passwords(session.state)
    rows = []
    for account in accounts:
        email = account.email.lower()
        role = syft_compat.service_role(account.role)
        user = existing.get(email)
        if email == session.email.lower():
            rows.append({"email": email, "role": account.role, "result": "root admin (unchanged)"})
            continue
        if user is None:
            password, generated = _new_password(email)
            client.api.services.user.create(
                name=account.name, email=email, password=password, password_verify=password,
                role=role, institution=account.institution or "")
            if generated:
                passwords[email] = password
                write_json_atomic(session.state.account_passwords_path, passwords)
            result = "created"
        else:
            changes = {}
            if user.role != role:
                changes["role"] = role
            if user.name != account.name:
                changes["name"] = account.name
            if (user.institution or "") != (account.institution or ""):
                changes["institution"] = account.institution or ""
            if changes:
                client.api.services.user.update(uid=user.id, **changes)
            result = "updated (" + ", ".join(sorted(changes)) + ")" if changes else "unchanged"
        if result != "unchanged":
            session.audit("account." + result.split()[0], target=email, role=account.role)
        rows.append({"email": email, "role": account.role, "result": result})
    return rows


def _checked_role(role: str) -> str:
    from domain_setup.policy.roles import ROLES

    if role not in ROLES:
        raise DomainError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    return role


def _user(client, email: str):
    wanted = email.strip().lower()
    for user in client.api.services.user.get_all():
        if user.email.lower() == wanted:
            return user
    raise DomainError(f"no account for {email[:100]!r}")


def _syft_call(what: str, call, *args, **kwargs):
    """A syft user-service call whose refusal becomes one line."""
    try:
        result = call(*args, **kwargs)
    except Exception as exc:  # syft raises SyftException subclasses with a public message
        raise DomainError(f"{what} failed: {syft_compat.error_text(exc)}") from None
    if syft_compat.is_syft_error(result):
        raise DomainError(f"{what} failed: {syft_compat.error_text(result)}")
    return result


def create_user(session, email: str, *, name: str, role: str, password: str,
                institution: str = "") -> None:
    """Create one account with the password its owner will be told (audited)."""
    email = email.strip().lower()
    name = name.strip()
    if not name or not email:
        raise DomainError("an account needs a name and an email")
    validate_password(password, what="the new account's password")
    client = session.client()
    _syft_call(f"creating {email}", client.api.services.user.create,
               name=name, email=email, password=password, password_verify=password,
               role=syft_compat.service_role(_checked_role(role)), institution=institution)
    session.audit("account.created", target=email, role=role)


def change_role(session, email: str, role: str) -> None:
    """Give one account another role (audited); the root admin stays admin."""
    if email.strip().lower() == session.state.load_config().admin_email.lower():
        raise DomainError("the root admin's role cannot change")
    client = session.client()
    user = _user(client, email)
    _syft_call(f"changing {email}'s role", client.api.services.user.update,
               uid=user.id, role=syft_compat.service_role(_checked_role(role)))
    session.audit("account.updated", target=user.email, role=role)


def remove_user(session, email: str) -> None:
    """Delete one account (audited); its tokens stop working with it (no account)."""
    if email.strip().lower() == session.state.load_config().admin_email.lower():
        raise DomainError("the root admin cannot be removed")
    client = session.client()
    user = _user(client, email)
    _syft_call(f"removing {email}", client.api.services.user.delete, uid=user.id)
    session.audit("account.removed", target=user.email)

