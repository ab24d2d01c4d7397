"""The admin's session with its domain: URL, admin token and syft admin client.

The server writes ``connection.json`` (0600) at every start with a fresh admin token
for the CLI (`domain_setup.server.cli_credentials`); `AdminClient` reads it and talks
to the domain over HTTP like any remote admin would.
"""

from __future__ import annotations

from typing import Any

import requests

from common.connection import HTTP_TIMEOUT, auth_headers, connect_client, gate_reason
from common.errors import DomainError
from common.secure_files import read_json
from domain_setup.state import StateDir

class AdminSession:
    """What every admin CLI command uses to reach the domain."""

    def __init__(self, state: StateDir):
        self.state = state
        if not state.connection_path.exists():
            raise DomainError(f"no running domain in {state.root}: run `python -m domain_setup "
                              f"start --state-dir {state.root}` first")
        data = read_json(state.connection_path)
        self.url: str = data["url"]
        self.email: str = data["email"]
        self.token: str = data["token"]
        self._client: Any = None

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON request to a /pneumosyft route; refusals become one-line errors."""
        try:
            response = requests.request(method, f"{self.url}{path}", headers=auth_headers(self.token),
                                        timeout=HTTP_TIMEOUT, **kwargs)
        except requests.RequestException:
            raise DomainError(f"cannot reach the domain at {self.url}: is it running?") from None
        if response.status_code != 200:
            raise DomainError(gate_reason(response))
        return response.json()

    def client(self) -> Any:
        """The syft client logged in as the root admin (through the gate)."""
        if self._client is None:
            self._client = connect_client(self.url, token=self.token, email=self.email,
                                          password=self.state.admin_password())
        return self._client

    def audit(self, action: str, target: str = "", outcome: str = "ok", **details: Any) -> None:
        """Append an admin action to the domain's audit log."""
        self.request("POST", "/pneumosyft/audit", json={"action": action, "target": target,
                                                        "outcome": outcome, "details": details})
