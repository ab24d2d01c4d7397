"""Connect to a hospital domain with the token the hospital issued.

Details come from arguments, else from a connection file written by the admin
(``python -m domain_setup token issue --email E --write-connection FILE``), whose
path is given or in ``$PNEUMOSYFT_CONNECTION``. Nothing secret goes in a notebook.

    client = connect()                                   # $PNEUMOSYFT_CONNECTION
    client = connect("http://127.0.0.1:8081", token=t, email=e, password=p)
    client = connect("https://10.0.0.2:8081", token=t, email=e, password=p,
                     tls_fingerprint="AB:CD:...")       # the admin reads it out to you
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from common.connection import connect_client
from common.errors import DomainError
from common.secure_files import read_json
from common.tls import fingerprint_of_pem, normalize_fingerprint, trust

CONNECTION_ENV = "PNEUMOSYFT_CONNECTION"


def load_connection_file(path: str | Path | None = None) -> dict:
    """The researcher's connection details: url, email, password, token (and with TLS, the
    certificate's fingerprint, which every later request to that domain is checked
    against)."""
    path = path or os.environ.get(CONNECTION_ENV)
    if not path:
        raise DomainError(f"no connection details: pass url/token/email/password, or set "
                          f"${CONNECTION_ENV} to the file your hospital admin gave you")
    if not Path(path).exists():
        raise DomainError(f"connection file {path} does not exist")
    data = read_json(path)
    missing = [k for k in ("url", "email", "password", "token") if not data.get(k)]
    if missing:
        raise DomainError(f"connection file {path} lacks {', '.join(missing)}")
    pin = data.get("tls_fingerprint")
    if data.get("tls_certificate") and pin and fingerprint_of_pem(data["tls_certificate"]) != \
            normalize_fingerprint(pin):
        raise DomainError(f"connection file {path}: its certificate is not the one its "
                          "tls_fingerprint names")
    if pin or data.get("tls_ca_bundle"):
        trust(data["url"], fingerprint=pin, ca_bundle=data.get("tls_ca_bundle"))
    return data


def connect(url: str | None = None, *, token: str | None = None, email: str | None = None,
            password: str | None = None, connection_file: str | Path | None = None,
            quiet: bool = True, tls_fingerprint: str | None = None,
            ca_bundle: str | None = None) -> Any:
    """A logged-in syft client for the researcher, every request carrying the token. Over
    HTTPS the domain's certificate must match the connection file's ``tls_fingerprint``
    (or `tls_fingerprint`, or chain to `ca_bundle`); a mismatch is refused with one line."""
    if not (url and token and email and password):
        details = load_connection_file(connection_file)
        url, token = url or details["url"], token or details["token"]
        email, password = email or details["email"], password or details["password"]
    return connect_client(url, token=token, email=email, password=password, quiet=quiet,
                          tls_fingerprint=tls_fingerprint, ca_bundle=ca_bundle)


def domain_get(path: str, connection_file: str | Path | None = None) -> dict:
    """GET one of the domain's own routes (``/pneumosyft/...``) with the researcher's token;
    the JSON answer, or DomainError with the gate's one-line reason."""
    import requests

    from common.connection import HTTP_TIMEOUT, auth_headers, gate_reason

    details = load_connection_file(connection_file)
    response = requests.get(f"{details['url']}{path}", headers=auth_headers(details["token"]),
                            timeout=HTTP_TIMEOUT)
    if response.status_code != 200:
        raise DomainError(f"{details['url']}: {gate_reason(response)}")
    return response.json()


def my_runs(connection_file: str | Path | None = None) -> list[dict]:
    """The caller's runs in the domain's sandbox queue: each ``{"run", "state": "running" |
    "queued", "position", "seconds"}`` (position 1 runs next). A run waits while the
    sandboxes going use the domain's memory budget; its time limit starts when it runs.

        >>> my_runs()
        [{'run': '3f2a…', 'owner': 'ada@…', 'state': 'queued', 'position': 2, 'seconds': 4.1}]
    """
    return domain_get("/pneumosyft/runs", connection_file)["runs"]
