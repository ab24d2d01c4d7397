"""Certificates for the TLS tests: a hospital CA and the server certificates it issues,
written as the PEM files an IT department would hand the admin."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def hospital_ca(directory: Path, name: str = "St Mary IT Root CA") -> tuple[Path, object, object]:
    """A CA certificate file and its key (the key stays in memory)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    path = directory / "hospital-ca.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path, certificate, key


def server_certificate(directory: Path, ca: tuple, address: str, *, days: int = 365,
                       stem: str = "domain") -> tuple[Path, Path]:
    """A server certificate for `address` (an IP) signed by `ca`, and its key: (cert, key)."""
    _, ca_certificate, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    start = now - datetime.timedelta(days=2) if days > 0 else now - datetime.timedelta(days=30)
    certificate = (x509.CertificateBuilder().subject_name(_name(address))
                   .issuer_name(ca_certificate.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(now + datetime.timedelta(days=days))
                   .add_extension(x509.SubjectAlternativeName(
                       [x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
                   .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / f"{stem}-cert.pem", directory / f"{stem}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path
