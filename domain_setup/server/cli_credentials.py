"""The admin CLI's credentials, written by the server at every start into ``connection.json``.

The file (0600, in the state directory) holds the domain's URL and a fresh admin
token; the previous token is revoked.
"""

from __future__ import annotations

from typing import Any

from common.secure_files import read_json, write_json_atomic
from domain_setup.state import StateDir

CLI_TOKEN_TTL_SECONDS = 30 * 24 * 3600


def write_connection(state: StateDir, config: Any, authority: Any) -> None:
    """Issue the CLI's admin token (revoking the previous one) and write connection.json."""
    if state.connection_path.exists():
        old = read_json(state.connection_path).get("jti")
        if old:
            try:
                authority.revoke(old, reason="replaced at domain restart")
            except Exception:  # already revoked, or issued by an older key
                pass
    token, claims = authority.issue(config.admin_email, "admin", ttl_seconds=CLI_TOKEN_TTL_SECONDS)
    write_json_atomic(state.connection_path, {"url": config.url, "email": config.admin_email,
                                              "token": token, "jti": claims["jti"]})
