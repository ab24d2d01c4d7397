"""X25519 sealed boxes (libsodium via PyNaCl): shares readable only by their aggregator.

A sealed box is anonymous: anyone holding the public key can seal, only the
private key opens, and any change to the ciphertext is detected. It does not
say who sealed; who may send shares is decided by the domain's approvals.

    >>> private, public = generate_keypair()
    >>> open_sealed(seal(b"share", public), private)
    b'share'

Keys are raw 32-byte strings; ``key_to_text``/``key_from_text`` carry them in
JSON or YAML. A private key file is written 0600 and refused if others can read it.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from typing import Sequence

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from common import wire
from common.errors import PneumoSyftError, SharingError
from common.secret_sharing import SharedStateDict, add_state_dict_shares
from common.secure_files import read_secret, write_secret

KEY_BYTES = 32
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def _check_key(key: bytes, what: str) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
        size = len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__
        raise SharingError(f"{what} must be {KEY_BYTES} raw bytes, got {size}")
    return bytes(key)


# --- keys -----------------------------------------------------------------------

def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as (private, public), 32 raw bytes each."""
    private = PrivateKey.generate()
    return bytes(private), bytes(private.public_key)


def public_key_from_private(private_key: bytes) -> bytes:
    """The public key that belongs to `private_key`."""
    return bytes(PrivateKey(_check_key(private_key, "private key")).public_key)


def save_private_key(path: str | os.PathLike, key: bytes, *, overwrite: bool = False) -> None:
    """Write `key` atomically to a 0600 file; refuse to replace a key unless told to.

        save_private_key(state_dir / "aggregation_x25519.key", private)
    """
    key = _check_key(key, "private key")
    if not overwrite and os.path.lexists(path):
        raise SharingError(f"{path} already exists; refusing to replace a private key")
    try:
        write_secret(path, key)
    except PneumoSyftError as exc:
        raise SharingError(f"cannot save private key: {exc}") from None


def load_private_key(path: str | os.PathLike) -> bytes:
    """Read a key written by `save_private_key`; refuse one readable by group or others."""
    try:
        key = read_secret(path)
    except PneumoSyftError as exc:
        raise SharingError(f"cannot load private key: {exc}") from None
    if len(key) != KEY_BYTES:
        raise SharingError(f"{path} is not an X25519 private key "
                           f"({len(key)} bytes, expected {KEY_BYTES})")
    return key


def key_to_text(key: bytes) -> str:
    """Standard base64 of a 32-byte key (44 characters), for JSON or YAML.

        >>> key_to_text(bytes(32))
        'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='
    """
    return base64.b64encode(_check_key(key, "key")).decode("ascii")


def key_from_text(text: str) -> bytes:
    """Inverse of `key_to_text`; also accepts 64 hex digits.

        >>> key_from_text("00" * 32) == bytes(32)
        True
    """
    if not isinstance(text, str):
        raise SharingError(f"key text must be a string, got {type(text).__name__}")
    text = text.strip()
    try:
        key = bytes.fromhex(text) if _HEX_KEY.fullmatch(text) else \
            base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SharingError("key text is neither base64 nor hex") from None
    return _check_key(key, "key decoded from text")


# --- boxes ----------------------------------------------------------------------

def seal(data: bytes, public_key: bytes) -> bytes:
    """Encrypt `data` so that only the holder of the matching private key can read it."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SharingError(f"can only seal bytes, got {type(data).__name__}")
    return SealedBox(PublicKey(_check_key(public_key, "public key"))).encrypt(bytes(data))


def open_sealed(ciphertext: bytes, private_key: bytes) -> bytes:
    """Decrypt a sealed box; a wrong key or any tampering raises ``SharingError``."""
    box = SealedBox(PrivateKey(_check_key(private_key, "private key")))
    if not isinstance(ciphertext, (bytes, bytearray, memoryview)):
        raise SharingError(f"sealed data must be bytes, got {type(ciphertext).__name__}")
    try:
        return box.decrypt(bytes(ciphertext))
    except (CryptoError, TypeError, ValueError):
        raise SharingError("cannot open: sealed to another key or tampered") from None


def seal_shares(shared_list: Sequence[SharedStateDict],
                public_keys: Sequence[bytes]) -> list[bytes]:
    """Seal party i's share to public key i (serialised with ``wire.dumps``).

        sealed = seal_shares(share_state_dict(weights, n=3), [pk0, pk1, pk2])
    """
    if len(shared_list) != len(public_keys):
        raise SharingError(f"{len(shared_list)} shares but {len(public_keys)} public keys")
    for index, shared in enumerate(shared_list):
        if not isinstance(shared, SharedStateDict) or shared.party != index:
            raise SharingError(f"share {index} is not party {index}'s share; keep the order "
                               f"share_state_dict returned")
    return [seal(wire.dumps(shared), key) for shared, key in zip(shared_list, public_keys)]


def open_share(ciphertext: bytes, private_key: bytes) -> SharedStateDict:
    """Open one sealed share and parse it (``SharingError`` on any defect)."""
    return wire.loads(open_sealed(ciphertext, private_key))


def open_and_sum(ciphertexts: Sequence[bytes], private_key: bytes) -> SharedStateDict:
    """Open every share sealed to `private_key` and add them share-wise: what an
    aggregator releases. Refuses an empty list and the same ciphertext twice (one
    hospital's share counted twice is not a sum over hospitals).

        partial = open_and_sum([sealed_a[j], sealed_b[j], sealed_c[j]], private_key_j)
    """
    if isinstance(ciphertexts, (bytes, bytearray, str)) or not isinstance(ciphertexts, Sequence):
        raise SharingError("ciphertexts must be a list of sealed shares")
    if not ciphertexts:
        raise SharingError("no sealed shares to add")
    seen: set[bytes] = set()
    total = None
    for ciphertext in ciphertexts:
        share = open_share(ciphertext, private_key)  # refuses anything but a sealed box
        if bytes(ciphertext) in seen:
            raise SharingError("the same sealed share was given twice")
        seen.add(bytes(ciphertext))
        total = share if total is None else add_state_dict_shares(total, share)
    return total
