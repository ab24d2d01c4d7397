"""The admin's session with its domain: URL, admin token and syft admin client.

The server writes ``connection.json`` (0600) at every start with the domain's URL and
the admin's email, never a token. Each session issues itself a short-lived admin token
with the domain's key (`domain_setup.server.cli_credentials`), renews it before it
expires, revokes it when the session ends, and talks to the domain over HTTP like any
remote admin would.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import requests

from common.connection import auth_headers, connect_client, gate_reason
from common.errors import DomainError
from common.secure_files import read_json
from common.tls import explain
from domain_setup.server.cli_credentials import (CLI_SESSION_TTL_SECONDS, cli_session_token,
                                                  end_cli_session)
from domain_setup.state import StateDir
from domain_setup.tls_certificate import trust_own_domain

RENEW_BEFORE_SECONDS = 300
# a privacy quote or a policy reload on a busy 2-core host can take longer than a ping
ROUTE_TIMEOUT_SECONDS = 60


class AdminSession:
    """What every admin CLI command uses to reach the domain."""

    def __init__(self, state: StateDir):
        self.state = state
        if not state.connection_path.exists():
            raise DomainError(f"no running domain in {state.root}: run `python -m domain_setup "
                              f"start --state-dir {state.root}` first")
        data = read_json(state.connection_path)
        self.url: str = data["url"]
        trust_own_domain(state.load_config())  # its certificate, from the state directory
        self._http = requests.Session()  # one kept-alive connection: one TLS handshake
        self.email: str = data["email"]
        self._token = ""
        self._renew_at = 0.0
        self._finalizer: Any = None
        self._client: Any = None

    @property
    def token(self) -> str:
        """This session's admin token (issued on first use, renewed before it expires)."""
        if time.time() >= self._renew_at:
            self.close()
            self._token, jti = cli_session_token(self.state, self.email)
            self._renew_at = time.time() + CLI_SESSION_TTL_SECONDS - RENEW_BEFORE_SECONDS
            self._finalizer = weakref.finalize(self, _end_quietly, self.state, jti)
        return self._token

    def close(self) -> None:
        """Revoke this session's token (a later call issues a new one)."""
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer, self._client, self._renew_at = None, None, 0.0

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON request to a /pneumosyft route; refusals become one-line errors."""
        try:
            response = self._http.request(method, f"{self.url}{path}",
                                          headers=auth_headers(self.token),
                                          timeout=ROUTE_TIMEOUT_SECONDS, **kwargs)
        except requests.Timeout:
            raise DomainError(f"the domain at {self.url} did not answer {path} within "
                              f"{ROUTE_TIMEOUT_SECONDS} s") from None
        except requests.RequestException as exc:
            raise DomainError(explain(exc, self.url) or
                              f"cannot reach the domain at {self.url}: is it running?") from None
        if response.status_code != 200:
            raise DomainError(gate_reason(response))
        return response.json()

    def client(self) -> Any:
        """The syft client logged in as the root admin (through the gate)."""
        token = self.token  # renews the token (and drops a client holding the old one)
        if self._client is None:
            self._client = connect_client(self.url, token=token, email=self.email,
                                          password=self.state.admin_password())
            # the session's token dies with the session: the client keeps it alive
            self._client.pneumosyft_session = self
        return self._client

    def audit(self, action: str, target: str = "", outcome: str = "ok", **details: Any) -> None:
        """Append an admin action to the domain's audit log."""
        self.request("POST", "/pneumosyft/audit", json={"action": action, "target": target,
                                                        "outcome": outcome, "details": details})


def _end_quietly(state: StateDir, jti: str) -> None:
    try:
        end_cli_session(state, jti)
    except Exception:  # the state directory is gone, or the token already revoked
        pass
