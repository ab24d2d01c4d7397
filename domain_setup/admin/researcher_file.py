"""The researcher's connection file: everything `scientist.connect` needs, 0600.

The admin hands it to the researcher over a trusted channel; notebooks read it
via ``$PNEUMOSYFT_CONNECTION`` so that no secret is written into a notebook.
"""

from __future__ import annotations

from pathlib import Path

from common.secure_files import write_json_atomic
from domain_setup.admin.accounts import account_password
from domain_setup.state import StateDir


def write_researcher_file(path: str | Path, state: StateDir, url: str, email: str,
                          token: str) -> Path:
    """Write url, email, password and token for `email` to `path` (0600)."""
    path = Path(path)
    write_json_atomic(path, {"url": url, "email": email, "token": token,
                             "password": account_password(state, email),
                             "domain": state.load_config().name})
    return path
