"""Trusting a domain's TLS certificate: pinned by its SHA-256 fingerprint, or by a CA bundle.

A hospital domain serves HTTPS with its own certificate (often self-signed). The
connection file its admin hands out carries the certificate's fingerprint; `trust`
records it for that domain's origin (``https://HOST:PORT``), and from then on every
HTTP request this process makes to the origin, through `requests` (syft's own client
included) or `open_connection`, checks the certificate the server presents against the
pin, and fails with `TLSMismatch` when it differs. Origins never trusted here are
verified as usual (the system's CA bundle, or ``$REQUESTS_CA_BUNDLE``).

    trust("https://10.0.0.2:8081", fingerprint="AB:CD:...")     # 32 bytes, hex
    trust("https://xray.royal-infirmary.nhs.uk", ca_bundle="/etc/ssl/hospital-ca.pem")
    requests.get("https://10.0.0.2:8081/health")                # pinned
"""

from __future__ import annotations

import hashlib
import http.client
import re
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from common.errors import DomainError

_HEX64 = re.compile(r"[0-9a-f]{64}")


class TLSMismatch(DomainError):
    """The server's certificate is not the one this process was told to trust."""


def normalize_fingerprint(text: Any) -> str:
    """``AB:CD:...`` (the form `openssl x509 -fingerprint -sha256` prints) from a
    fingerprint written with or without colons or a ``SHA256:`` prefix, any case."""
    cleaned = str(text or "").strip().lower()
    cleaned = re.sub(r"^(sha-?256)[:= ]\s*(fingerprint=)?", "", cleaned).replace(":", "")
    if not _HEX64.fullmatch(cleaned):
        raise DomainError("a TLS fingerprint is the certificate's SHA-256 digest, 64 hex digits "
                          f"(got {str(text)[:80]!r})")
    return ":".join(cleaned[i:i + 2] for i in range(0, 64, 2)).upper()


def fingerprint_of_der(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, ``AB:CD:...``."""
    return normalize_fingerprint(hashlib.sha256(der).hexdigest())


def fingerprint_of_pem(pem: str | bytes) -> str:
    """The SHA-256 fingerprint of a PEM certificate, ``AB:CD:...``."""
    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    try:
        return fingerprint_of_der(ssl.PEM_cert_to_DER_cert(text.strip() + "\n"))
    except (ValueError, TypeError):
        raise DomainError("not a PEM certificate") from None


@dataclass(frozen=True)
class Trust:
    """How to verify one origin: a pinned fingerprint, or a CA bundle file."""

    fingerprint: str | None = None
    ca_bundle: str | None = None


_trusted: dict[str, Trust] = {}
_lock = threading.Lock()


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL, the key trust is recorded under: the host as requests
    sends it (IDNA-encoded, no trailing dot), the port explicit."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = (parsed.hostname or "").lower().rstrip(".")
    if not host.isascii():
        import idna

        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError:
            raise DomainError(f"invalid host name in {url[:100]!r}") from None
    host = f"[{host}]" if ":" in host else host
    return f"{parsed.scheme}://{host}:{port}"


def trust(url: str, *, fingerprint: str | None = None, ca_bundle: str | None = None,
          replace: bool = False) -> None:
    """Verify every later HTTPS request of this process to `url`'s origin against the pinned
    `fingerprint` or the CA bundle file `ca_bundle` (one of them; neither: the default).
    An origin already trusted otherwise is refused (a second connection file naming the
    same domain with another certificate is an attack, not an update) unless `replace`."""
    if fingerprint and ca_bundle:
        raise DomainError("trust a domain by its fingerprint or by a CA bundle, not both")
    if ca_bundle and not Path(ca_bundle).is_file():
        raise DomainError(f"CA bundle {ca_bundle} is not a file")
    key = origin(url)
    if not key.startswith("https://"):
        if fingerprint or ca_bundle:
            raise DomainError(f"{url} is plain HTTP: a TLS fingerprint or CA bundle needs https://")
        return
    entry = Trust(normalize_fingerprint(fingerprint) if fingerprint else None,
                  str(Path(ca_bundle).resolve()) if ca_bundle else None)
    with _lock:
        _install_into_requests()
        known = _trusted.get(key)
        if known is not None and known != entry and not replace:
            raise DomainError(f"{key} is already trusted by {_describe(known)}; refusing "
                              f"{_describe(entry)} for it (a connection file for the same "
                              "domain with another certificate?)")
        if entry.fingerprint or entry.ca_bundle:
            _trusted[key] = entry
        else:
            _trusted.pop(key, None)


def _describe(entry: Trust) -> str:
    if entry.fingerprint:
        return f"the pinned fingerprint {entry.fingerprint[:23]}..."
    return f"the CA bundle {entry.ca_bundle}" if entry.ca_bundle else "the default CA store"


def trusted(url: str) -> Trust | None:
    """What `url`'s origin is verified against here, or None (the default)."""
    return _trusted.get(origin(url))


def presented_fingerprint(url: str, timeout: float = 5.0) -> str:
    """The fingerprint of the certificate the server at `url` presents (unverified)."""
    parsed = urlparse(url)
    pem = ssl.get_server_certificate((parsed.hostname, parsed.port or 443), timeout=timeout)
    return fingerprint_of_pem(pem)


def explain(exc: BaseException, url: str) -> str | None:
    """One line for a TLS failure reaching `url` (None when `exc` is not one)."""
    text = repr(exc)
    if "SSL" not in text and "certificate" not in text.lower() and "Fingerprint" not in text:
        return None
    entry = trusted(url)
    if entry and entry.fingerprint and "Fingerprints did not match" in text:
        try:
            got = presented_fingerprint(url)
        except (OSError, DomainError):
            got = "another one"
        return (f"the domain at {url} presented a TLS certificate with SHA-256 fingerprint {got}, "
                f"not the pinned {entry.fingerprint}: refusing to connect (ask the hospital's "
                "admin whether its certificate changed)")
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        return f"{url} does not speak TLS (is it plain http://?)"
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        where = f"the CA bundle {entry.ca_bundle}" if entry and entry.ca_bundle else \
            "this machine's CA bundle"
        return (f"the TLS certificate of {url} is not trusted by {where}: put the domain's "
                "TLS fingerprint in the connection file (tls_fingerprint), or give its CA bundle")
    return f"TLS with {url} failed: {' '.join(str(exc).split())[:200]}"


def open_connection(url: str, timeout: float) -> http.client.HTTPConnection:
    """A connected `http.client` connection to `url`'s origin, verified as `requests` is."""
    parsed = urlparse(url)
    if parsed.scheme != "https":
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
        connection.connect()
        return connection
    entry = trusted(url)
    if entry and entry.fingerprint:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=entry.ca_bundle if entry else None)
    connection = http.client.HTTPSConnection(parsed.hostname, parsed.port, timeout=timeout,
                                             context=context)
    connection.connect()
    if entry and entry.fingerprint:
        got = fingerprint_of_der(connection.sock.getpeercert(binary_form=True))
        if got != entry.fingerprint:
            connection.close()
            raise TLSMismatch(f"the domain at {url} presented a TLS certificate with SHA-256 "
                              f"fingerprint {got}, not the pinned {entry.fingerprint}: "
                              "refusing to connect")
    return connection


# --------------------------------------------------------------------------- requests
def _install_into_requests() -> None:
    """Make requests' HTTPAdapter consult `_trusted` by the request's origin (once)."""
    from requests.adapters import HTTPAdapter

    if getattr(HTTPAdapter, "pneumosyft_pins", False):
        return
    build_key = HTTPAdapter.build_connection_pool_key_attributes
    cert_verify = HTTPAdapter.cert_verify

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        entry = _trusted.get(origin(request.url))
        if entry is None:  # a pin holds even where a caller turned verification off
            return build_key(self, request, verify, cert)
        if entry.ca_bundle:
            return build_key(self, request, entry.ca_bundle, cert)
        host_params, pool_kwargs = build_key(self, request, False, cert)
        pool_kwargs["assert_fingerprint"] = entry.fingerprint  # urllib3 checks the leaf
        return host_params, pool_kwargs

    def verify_certificate(self, conn, url, verify, cert):
        entry = _trusted.get(origin(url))
        if entry is not None:
            verify = entry.ca_bundle or False  # a pin: the fingerprint is the check
        return cert_verify(self, conn, url, verify, cert)

    HTTPAdapter.build_connection_pool_key_attributes = build_connection_pool_key_attributes
    HTTPAdapter.cert_verify = verify_certificate
    HTTPAdapter.pneumosyft_pins = True
