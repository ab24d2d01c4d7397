"""Where a domain may serve plain HTTP: on a loopback address only.

A bearer token sent over plain HTTP across a network is a token handed to anyone on the
path. A domain that serves HTTPS (`domain_setup.tls_certificate`) may listen anywhere. One
that serves plain HTTP on an address that is not loopback refuses to start, unless the
admin passes ``--insecure-http`` on that start: then it starts, says so on the terminal
and in the domain log, and writes ``domain.insecure_http`` to the audit log, every start.
The flag is not remembered: the next start without it is refused again. (Serving HTTPS
itself with ``--tls-cert``/``--tls-self-signed``, or behind a TLS reverse proxy on the
same host, is the way out.)

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost")
    (True, True, True)
    >>> is_loopback("0.0.0.0"), is_loopback("10.1.2.3")
    (False, False)
"""

from __future__ import annotations

import ipaddress
from typing import Any

from common.errors import DomainError
from domain_setup.state import TLS_KEY

INSECURE_HTTP_KEY = "insecure_http"  # in config.extra, set by each start


def is_loopback(host: str) -> bool:
    """`host` is a loopback address (or "localhost"); "0.0.0.0" and names are not."""
    if str(host).lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(config: Any) -> str | None:
    """None on loopback or with TLS; the warning to show when plain HTTP on a network address was
    accepted with --insecure-http; else DomainError (one line)."""
    if is_loopback(config.host) or config.extra.get(TLS_KEY):
        return None
    if not config.extra.get(INSECURE_HTTP_KEY):
        raise DomainError(
            f"refusing to serve plain HTTP on {config.host}: bearer tokens would cross the "
            "network in the clear; serve HTTPS (--tls-cert/--tls-key or "
            "--tls-self-signed), listen on 127.0.0.1 behind a TLS reverse proxy, or start "
            "with --insecure-http to accept that (audited)")
    return (f"INSECURE: plain HTTP on {config.host}:{config.port}; every token sent to "
            "this domain can be read on the network path (--insecure-http)")
