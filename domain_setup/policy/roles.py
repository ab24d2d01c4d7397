"""The one table of roles on a hospital domain, lowest first.

Tokens, accounts, permission rules, the gate and the CLI all read it; a role's
rank decides whether a token may carry it and whether an account may log in with it.

    >>> role_at_least("admin", "data_owner"), role_below("data_scientist", "admin")
    (True, True)
"""

from __future__ import annotations

ROLES: tuple[str, ...] = ("data_scientist", "data_owner", "admin")


def role_at_least(role: str, minimum: str) -> bool:
    """`role` ranks at or above `minimum` (unknown roles rank nowhere)."""
    if role not in ROLES or minimum not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(minimum)


def role_below(role: str, other: str) -> bool:
    """`role` ranks strictly below `other` (unknown roles rank nowhere)."""
    return role in ROLES and other in ROLES and ROLES.index(role) < ROLES.index(other)
