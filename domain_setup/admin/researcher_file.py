"""The researcher's connection file: everything `scientist.connect` needs, 0600.

The admin hands it to the researcher over a trusted channel; notebooks read it
via ``$PNEUMOSYFT_CONNECTION`` so that no secret is written into a notebook.
"""

from __future__ import annotations

from pathlib import Path

from common.secure_files import write_json_atomic
from domain_setup import tls_certificate
from domain_setup.admin.accounts import account_password
from domain_setup.state import StateDir


def write_researcher_file(path: str | Path, state: StateDir, url: str, email: str,
                          token: str) -> Path:
    """Write url, email, password and token for `email` to `path` (0600); with TLS, the
    certificate's SHA-256 fingerprint (which `scientist.connect` pins) and the certificate
    itself (a stock client's CA bundle)."""
    path = Path(path)
    config = state.load_config()
    details = {"url": url, "email": email, "token": token,
               "password": account_password(state, email), "domain": config.name}
    pin = tls_certificate.fingerprint(config)
    if pin:
        details["tls_fingerprint"] = pin
        details["tls_certificate"] = Path(config.extra[tls_certificate.TLS_KEY]["cert"]
                                          ).read_text()
    write_json_atomic(path, details)
    return path
