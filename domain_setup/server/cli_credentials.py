"""Where the admin CLI finds its domain: ``connection.json``, written by the server at
every start, holds the URL and the admin's email, and no token.

The CLI runs on the hospital's machine, as the operator who owns the state
directory; each CLI session issues itself a short-lived admin token with the
domain's key (`cli_session_token`) and revokes it when it ends, so that no
long-lived admin credential lies on disk.
"""

from __future__ import annotations

from typing import Any

from common.secure_files import read_json, write_json_atomic
from domain_setup.state import StateDir

CLI_SESSION_TTL_SECONDS = 3600


def write_connection(state: StateDir, config: Any, authority: Any) -> None:
    """Write connection.json (URL and admin email); revoke the token that a connection.json
    of an earlier release still holds."""
    if state.connection_path.exists():
        old = read_json(state.connection_path).get("jti")
        if old:
            try:
                authority.revoke(old, reason="connection.json no longer holds a token")
            except Exception:  # already revoked, or issued by an older key
                pass
    write_json_atomic(state.connection_path, {"url": config.url, "email": config.admin_email})


def cli_session_token(state: StateDir, email: str) -> tuple[str, str]:
    """(token, jti): a fresh admin token for one CLI session, valid for an hour."""
    from domain_setup.server.tokens import TokenAuthority

    token, claims = TokenAuthority.load(state.root).issue(
        email, "admin", ttl_seconds=CLI_SESSION_TTL_SECONDS)
    return token, claims["jti"]


def end_cli_session(state: StateDir, jti: str) -> None:
    """Revoke a CLI session's token."""
    from domain_setup.server.tokens import TokenAuthority

    TokenAuthority.load(state.root).revoke(jti, reason="admin CLI session ended")
