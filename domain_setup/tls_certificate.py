"""The domain's TLS certificate: the hospital's own, or one generated and kept in the state dir.

``start --tls-cert FILE --tls-key FILE`` serves HTTPS with the hospital's certificate
(read again on every start, so a renewal in place is picked up); ``--tls-self-signed``
generates an ECDSA P-256 key and a self-signed certificate into ``STATE_DIR/tls/``
(0600) on the first start and keeps them, so the fingerprint researchers pinned stays
valid. Once on, TLS stays on for later starts. The choice lives in ``domain.json``
(``extra["tls"]``); the researcher's connection file and the federation card carry the
certificate's SHA-256 fingerprint (`fingerprint`).

    config.extra[TLS_KEY] = checked_choice(state, cert=None, key=None, self_signed=True)
    ensure_certificate(state, config)        # on start: generate once, then check the pair
    fingerprint(config)                      # 'AB:CD:...'
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from pathlib import Path
from typing import Any

from common.errors import DomainError
from common.secure_files import ensure_private_dir, write_bytes_atomic
from common.tls import fingerprint_of_pem, trust
from domain_setup.state import TLS_KEY  # config.extra: {"cert", "key", "self_signed"}

__all__ = ["TLS_KEY", "checked_choice", "ensure_certificate", "fingerprint", "serves_tls",
           "trust_own_domain"]
SELF_SIGNED_DAYS = 825
EXPIRY_WARNING_DAYS = 30


def tls_dir(state: Any) -> Path:
    return Path(state.root) / "tls"


def checked_choice(state: Any, current: dict | None, *, cert: str | None, key: str | None,
                   self_signed: bool) -> dict | None:
    """What ``extra["tls"]`` becomes from this start's options (`current`: what the state
    directory remembers; None: plain HTTP)."""
    if self_signed and (cert or key):
        raise DomainError("give --tls-cert and --tls-key, or --tls-self-signed, not both")
    if bool(cert) != bool(key):
        raise DomainError("--tls-cert and --tls-key go together")
    if cert:
        for what, path in (("--tls-cert", cert), ("--tls-key", key)):
            if not Path(path).is_file():
                raise DomainError(f"{what} {path} is not a file")
        return {"cert": str(Path(cert).resolve()), "key": str(Path(key).resolve()),
                "self_signed": False}
    if self_signed:
        if current and current.get("self_signed"):
            return current
        return {"cert": str(tls_dir(state) / "cert.pem"), "key": str(tls_dir(state) / "key.pem"),
                "self_signed": True}
    return current


def serves_tls(config: Any) -> bool:
    return bool(config.extra.get(TLS_KEY))


def ensure_certificate(state: Any, config: Any) -> str | None:
    """Generate the self-signed pair once; check the pair that will be served (readable,
    matching, in date). Returns a warning line when it expires within 30 days."""
    choice = config.extra.get(TLS_KEY)
    if not choice:
        return None
    cert, key = Path(choice["cert"]), Path(choice["key"])
    if choice.get("self_signed") and not cert.exists():
        _write_self_signed(state, config.host, cert, key)
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise DomainError(f"cannot serve TLS with {cert} and {key}: "
                          f"{getattr(exc, 'strerror', None) or exc.args[-1]} "
                          "(is the key the certificate's, both PEM?)") from None
    return _expiry_warning(cert)


def fingerprint(config: Any) -> str | None:
    """The SHA-256 fingerprint of the served certificate, ``AB:CD:...`` (None: plain HTTP)."""
    choice = config.extra.get(TLS_KEY)
    if not choice:
        return None
    try:
        return fingerprint_of_pem(Path(choice["cert"]).read_bytes())
    except OSError as exc:
        raise DomainError(f"cannot read the TLS certificate {choice['cert']}: {exc.strerror}") \
            from None


def trust_own_domain(config: Any) -> None:
    """This process (the admin's CLI) pins its own domain's certificate."""
    pin = fingerprint(config)
    if pin:
        trust(config.url, fingerprint=pin, replace=True)  # the state directory is authoritative


# --------------------------------------------------------------------------- generation
def _subject_names(host: str) -> list:
    from cryptography import x509

    names: list = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for name in {host, socket.gethostname()}:
        if not name or name in ("0.0.0.0", "::", "localhost", "127.0.0.1"):
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(name))
    return names


def _constraints(names: list) -> list:
    """Name constraints permitting exactly `names` (an IP as a /32 or /128 network)."""
    from cryptography import x509

    return [x509.IPAddress(ipaddress.ip_network(n.value)) if isinstance(n, x509.IPAddress)
            else n for n in names]


def _write_self_signed(state: Any, host: str, cert_path: Path, key_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ensure_private_dir(cert_path.parent)
    key = ec.generate_private_key(ec.SECP256R1())
    names = _subject_names(host)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"PneumoSyft domain {host}"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PneumoSyft (self-signed)")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # its own trust anchor: a stock client may name it as its CA bundle; constrained to
        # its own names, so its key cannot vouch for another hospital's
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.NameConstraints(permitted_subtrees=_constraints(names),
                                            excluded_subtrees=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256()))
    write_bytes_atomic(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    write_bytes_atomic(cert_path, certificate.public_bytes(serialization.Encoding.PEM))


def _expiry_warning(cert_path: Path) -> str | None:
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    left = certificate.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    if left.total_seconds() <= 0:
        raise DomainError(f"the TLS certificate {cert_path} expired on "
                          f"{certificate.not_valid_after_utc:%Y-%m-%d}: renew it")
    if left.days < EXPIRY_WARNING_DAYS:
        return f"the TLS certificate {cert_path} expires in {left.days} days: renew it"
    return None
