"""Connecting a stock syft 0.9.5 client to a PneumoSyft domain through its token gate.

Both roles use it: the researcher via `scientist.connect`, the admin CLI with its
own admin token. Example::

    client = connect_client("https://10.0.0.2:8081", token=jwt, email=e, password=p,
                            tls_fingerprint="AB:CD:...")
    client.datasets
"""

from __future__ import annotations

import contextlib
import re
from typing import Any
from urllib.parse import urlparse

import requests

from common import syft_compat
from common.errors import DomainError
from common.tls import explain, trust

HTTP_TIMEOUT = 10


def validate_url(url: str) -> str:
    """An http(s) URL with a host and nothing after the port; returned without a trailing /."""
    if not isinstance(url, str) or not re.fullmatch(r"[\x21-\x7e]{1,300}", url):
        raise DomainError(f"invalid domain URL {str(url)[:100]!r}: printable ASCII, "
                          "http(s)://HOST:PORT")
    parsed = urlparse(url or "")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise DomainError(f"invalid domain URL {url!r}: expected http(s)://HOST:PORT")
    try:
        parsed.port
    except ValueError:
        raise DomainError(f"invalid port in domain URL {url!r}") from None
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment or "@" in parsed.netloc:
        raise DomainError(f"invalid domain URL {url!r}: give only http(s)://HOST:PORT")
    return url.rstrip("/")


def auth_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def gate_reason(response: requests.Response) -> str:
    """The gate's one-line reason of a refused request, else the status line."""
    try:
        return str(response.json()["error"])
    except Exception:
        return f"HTTP {response.status_code}"


def check_reachable(url: str, token: str) -> None:
    """Fail with a clear error when the domain is down or refuses the token."""
    try:
        health = requests.get(f"{url}/health", timeout=HTTP_TIMEOUT)
    except requests.RequestException as exc:
        raise DomainError(explain(exc, url) or
                          f"cannot reach a domain at {url}: is it running?") from None
    if health.status_code != 200:
        raise DomainError(f"{url} is not a PneumoSyft domain (GET /health gave {health.status_code})")
    probe = requests.get(f"{url}/api/v2/metadata", headers=auth_headers(token),
                         timeout=HTTP_TIMEOUT)
    if probe.status_code in (401, 403):
        raise DomainError(f"the domain refused the token: {gate_reason(probe)}")
    if probe.status_code != 200:
        raise DomainError(f"{url} answered {probe.status_code} to the syft metadata request")


def _login_refusal(url: str, token: str, email: str, password: str) -> str:
    response = requests.post(f"{url}/api/v2/login", json={"email": email, "password": password},
                             headers=auth_headers(token), timeout=HTTP_TIMEOUT)
    return gate_reason(response) if response.status_code != 200 else "invalid email or password"


def connect_client(url: str, *, token: str, email: str, password: str,
                   quiet: bool = True, tls_fingerprint: str | None = None,
                   ca_bundle: str | None = None) -> Any:
    """A logged-in syft client whose every request carries the domain's JWT; over HTTPS the
    server's certificate is checked against `tls_fingerprint` or `ca_bundle` (`common.tls`)."""
    from syft.client.client import HTTPConnection

    url = validate_url(url)
    if tls_fingerprint or ca_bundle:  # given by the caller in so many words: it decides
        trust(url, fingerprint=tls_fingerprint, ca_bundle=ca_bundle, replace=True)
    if not token:
        raise DomainError("a token is required: ask the hospital admin for one")
    check_reachable(url, token)
    syft_compat.keep_https_ports()
    syft_compat.reuse_api_connections()
    connection = HTTPConnection(url=url, headers=auth_headers(token))
    with syft_compat.muted() if quiet else contextlib.nullcontext():
        guest = connection.get_client_type().unwrap()(connection=connection)
        try:
            client = guest.login(email=email, password=password, cache=False)
        except Exception:
            raise DomainError(f"login refused for {email}: "
                              f"{_login_refusal(url, token, email, password)}") from None
    syft_compat.carry_token_to(url, token, client.credentials.verify_key)
    return client
