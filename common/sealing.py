"""X25519 sealing: shares readable only by their aggregator.

A sealed box (libsodium via PyNaCl) is anonymous: anyone holding the public key
can seal, only the private key opens, and any change to the ciphertext is
detected. It does not say who sealed; who may send shares is decided by the
domain's approvals.

    >>> private, public = generate_keypair()
    >>> open_sealed(seal(b"share", public), private)
    b'share'

Authenticated sealing (``seal_from``/``open_from``) is between two known
federation members: the key comes from X25519 of the sender's static private key
and the recipient's public key, through HKDF-SHA256 bound to the round, both
public keys and the number of parties, and AES-256-GCM seals. Only the sender (or
the recipient itself) can make a ciphertext that opens, and only for that round;
someone who knows only public keys, such as a researcher, cannot. Seeded
secure aggregation is built on it: a party sends each other party a sealed
32-byte seed (``seal_seeded_shares``) and keeps one correction share, sealed to
itself, that it adds to the seeds it receives (``open_seeded_and_sum``)::

    correction, seeds = seal_seeded_shares(update, private_j, public_keys, "round-4")
    partial_j = open_seeded_and_sum(private_j, public_keys, "round-4", correction,
                                    [(public_keys[k], seeds_from_k[j]) for k != j])

With ``ring_bits=32`` the correction holds uint32 words (about 4 bytes a value, the
size of a float32 model) and every seed expands in that ring; all parties of a
round must use the same ring (partial sums of different rings refuse to add up).

Keys are raw 32-byte strings; ``key_to_text``/``key_from_text`` carry them in
JSON or YAML. A private key file is written 0600 and refused if others can read it.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from common import wire
from common.errors import PneumoSyftError, SharingError
from common.secret_sharing import (
    FRAC_BITS, MAX_PARTIES, SEED_BYTES, SharedStateDict, add_seeds_into, add_state_dict_shares,
    seeded_share_state_dict,
)
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


# --- authenticated sealing between federation members -----------------------------

_AUTH_MAGIC = b"PSA\x01"  # format version 1
_SALT_BYTES = 32
_TAG_BYTES = 16
# Each message gets its own AES-256-GCM key (HKDF with a fresh random salt), used once,
# so a fixed nonce is safe.
_GCM_NONCE = bytes(12)
_AUTH_LABEL = b"PneumoSyft authenticated seal v1"
_NOT_FROM = ("cannot open: not sealed by this sender to this key for this round and "
             "number of parties, or tampered")
MAX_ROUND_ID_CHARS = 200


@dataclass(frozen=True)
class RoundContext:
    """What an authenticated ciphertext is bound to besides its two keys: the round
    (an id never reused for another round) and how many parties take part.

        >>> RoundContext("round-7", n_parties=3)
        RoundContext(round_id='round-7', n_parties=3)
    """

    round_id: str
    n_parties: int

    def __post_init__(self) -> None:
        if not isinstance(self.round_id, str) or not 0 < len(self.round_id) <= MAX_ROUND_ID_CHARS:
            raise SharingError(f"round id must be a non-empty string of at most "
                               f"{MAX_ROUND_ID_CHARS} characters, got {self.round_id!r:.60}")
        if isinstance(self.n_parties, bool) or not isinstance(self.n_parties, (int, np.integer)) \
                or not 1 <= self.n_parties <= MAX_PARTIES:
            raise SharingError(f"number of parties must be an integer from 1 to {MAX_PARTIES}, "
                               f"got {self.n_parties!r}")
        object.__setattr__(self, "n_parties", int(self.n_parties))

    def associated_data(self, purpose: str, sender_public: bytes, recipient_public: bytes) -> bytes:
        """The bytes both HKDF and AES-GCM bind: every field length-prefixed."""
        fields = (_AUTH_LABEL, purpose.encode("utf-8"), self.round_id.encode("utf-8"),
                  sender_public, recipient_public, struct.pack("<I", self.n_parties))
        return b"".join(struct.pack("<I", len(field)) + field for field in fields)


def _check_context(context: RoundContext) -> RoundContext:
    if not isinstance(context, RoundContext):
        raise SharingError(f"context must be a RoundContext, got {type(context).__name__}")
    return context


def _message_cipher(own_private: bytes, peer_public: bytes, salt: bytes,
                    associated_data: bytes) -> AESGCM:
    """AES-256-GCM under HKDF-SHA256(X25519(own, peer), salt, info=associated data)."""
    own = X25519PrivateKey.from_private_bytes(_check_key(own_private, "private key"))
    try:
        shared = own.exchange(X25519PublicKey.from_public_bytes(
            _check_key(peer_public, "public key")))
    except ValueError:  # a low-order point: the shared secret would be all zeros
        raise SharingError("public key is not a usable X25519 key") from None
    return AESGCM(HKDF(hashes.SHA256(), 32, salt=salt, info=associated_data).derive(shared))


def _check_bytes(data: bytes, what: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SharingError(f"{what} must be bytes, got {type(data).__name__}")
    return bytes(data)


def seal_from(sender_private: bytes, recipient_public: bytes, payload: bytes,
              context: RoundContext, *, purpose: str = "payload") -> bytes:
    """Encrypt `payload` to `recipient_public` so that it opens only as coming from the
    holder of `sender_private`, in `context`, for the same `purpose` label.

        >>> a_private, a_public = generate_keypair()
        >>> b_private, b_public = generate_keypair()
        >>> context = RoundContext("round-1", n_parties=2)
        >>> open_from(b_private, a_public, seal_from(a_private, b_public, b"hi", context), context)
        b'hi'
    """
    payload = _check_bytes(payload, "payload to seal")
    recipient_public = _check_key(recipient_public, "public key")
    associated = _check_context(context).associated_data(
        purpose, public_key_from_private(sender_private), recipient_public)
    salt = os.urandom(_SALT_BYTES)
    cipher = _message_cipher(sender_private, recipient_public, salt, associated)
    try:
        return _AUTH_MAGIC + salt + cipher.encrypt(_GCM_NONCE, payload, _AUTH_MAGIC + associated)
    except OverflowError:
        raise SharingError(f"cannot seal {len(payload)} bytes: at most 2^31 - 1") from None


def open_from(recipient_private: bytes, sender_public: bytes, ciphertext: bytes,
              context: RoundContext, *, purpose: str = "payload") -> bytes:
    """Decrypt what `seal_from` made; anything not sealed by the holder of
    `sender_public`'s private key to this key, in `context`, with this `purpose`,
    raises ``SharingError``."""
    ciphertext = _check_bytes(ciphertext, "sealed data")
    sender_public = _check_key(sender_public, "public key")
    associated = _check_context(context).associated_data(
        purpose, sender_public, public_key_from_private(recipient_private))
    header = len(_AUTH_MAGIC) + _SALT_BYTES
    if len(ciphertext) < header + _TAG_BYTES or not ciphertext.startswith(_AUTH_MAGIC):
        raise SharingError(_NOT_FROM)
    salt = ciphertext[len(_AUTH_MAGIC):header]
    cipher = _message_cipher(recipient_private, sender_public, salt, associated)
    try:
        return cipher.decrypt(_GCM_NONCE, ciphertext[header:], _AUTH_MAGIC + associated)
    except InvalidTag:
        raise SharingError(_NOT_FROM) from None


def seal_seed(sender_private: bytes, recipient_public: bytes, seed: bytes,
              context: RoundContext) -> bytes:
    """Seal one 32-byte share seed to the party whose share it expands to."""
    seed = _check_bytes(seed, "seed")
    if len(seed) != SEED_BYTES:
        raise SharingError(f"a seed must be {SEED_BYTES} bytes, got {len(seed)}")
    return seal_from(sender_private, recipient_public, seed, context, purpose="seed")


def open_seed(recipient_private: bytes, sender_public: bytes, ciphertext: bytes,
              context: RoundContext) -> bytes:
    """Open a seed sealed by `seal_seed` from the holder of `sender_public`."""
    seed = open_from(recipient_private, sender_public, ciphertext, context, purpose="seed")
    if len(seed) != SEED_BYTES:  # only a buggy sender gets here: the seal is authentic
        raise SharingError(f"sealed seed holds {len(seed)} bytes, not {SEED_BYTES}")
    return seed


def seal_correction(private_key: bytes, correction: SharedStateDict,
                    context: RoundContext) -> bytes:
    """Seal a party's own correction share to itself (``wire.dumps``), bound to the round."""
    own_public = public_key_from_private(private_key)
    return seal_from(private_key, own_public, wire.dumps(correction), context,
                     purpose="correction")


def open_correction(private_key: bytes, ciphertext: bytes,
                    context: RoundContext) -> SharedStateDict:
    """Open and parse a correction share this key sealed to itself for `context`."""
    own_public = public_key_from_private(private_key)
    return wire.loads(open_from(private_key, own_public, ciphertext, context,
                                purpose="correction"))


def _party_keys(public_keys: Sequence[bytes], private_key: bytes) -> tuple[list[bytes], int]:
    """The checked list of party public keys, and this private key's index in it."""
    if isinstance(public_keys, (bytes, bytearray, str)) or not isinstance(public_keys, Sequence):
        raise SharingError("public_keys must be a list of the parties' public keys")
    keys = [_check_key(key, f"public key of party {i}") for i, key in enumerate(public_keys)]
    if len(keys) < 2:
        raise SharingError(f"seeded secure aggregation needs at least 2 parties, got {len(keys)}")
    if len(set(keys)) != len(keys):
        raise SharingError("the parties' public keys repeat: each party needs its own key")
    own = public_key_from_private(private_key)
    if own not in keys:
        raise SharingError("this private key's public key is not among the parties' keys")
    return keys, keys.index(own)


def seal_seeded_shares(weights: Mapping[str, np.ndarray], private_key: bytes,
                       public_keys: Sequence[bytes], round_id: str,
                       frac_bits: int = FRAC_BITS, *,
                       ring_bits: int = 64) -> tuple[bytes, list[bytes | None]]:
    """What a party sends in a seeded round: its correction share sealed to itself,
    and for each other party k the seed of k's share sealed to public_keys[k] (None
    at its own index). The party is the one whose public key `private_key` matches.
    ring_bits=32 shares in the 32-bit ring: half the correction's bytes, and
    |x| * 2^f * n_parties must stay below 2^31.

        correction, sealed_seeds = seal_seeded_shares(scaled, private_j, public_keys, "r4")
    """
    keys, own_index = _party_keys(public_keys, private_key)
    context = RoundContext(round_id, len(keys))
    correction, seeds = seeded_share_state_dict(weights, len(keys), own_index, frac_bits,
                                                ring_bits=ring_bits)
    sealed = [None if seed is None else seal_seed(private_key, key, seed, context)
              for seed, key in zip(seeds, keys)]
    return seal_correction(private_key, correction, context), sealed


def _seeds_by_sender(sealed_seeds: Sequence[tuple[bytes, bytes]], keys: list[bytes],
                     own_index: int) -> list[tuple[bytes, bytes]]:
    """(sender public key, ciphertext) for every other party, in party order; refuses a
    missing, repeated, unknown or self-addressed sender."""
    if isinstance(sealed_seeds, (bytes, bytearray, str)) or not isinstance(sealed_seeds, Sequence):
        raise SharingError("sealed_seeds must be a list of (sender public key, sealed seed)")
    by_sender: dict[int, bytes] = {}
    for entry in sealed_seeds:
        if isinstance(entry, (bytes, bytearray, str)) or not isinstance(entry, Sequence) \
                or len(entry) != 2:
            raise SharingError("each sealed seed must be a (sender public key, sealed seed) pair")
        sender = _check_key(entry[0], "sender public key")
        if sender not in keys:
            raise SharingError("a sealed seed names a sender that is not one of the parties")
        index = keys.index(sender)
        if index == own_index:
            raise SharingError(f"a sealed seed names this aggregator (party {index}) as its "
                               f"sender; its own share is the correction")
        if index in by_sender:
            raise SharingError(f"party {index} sent more than one seed")
        by_sender[index] = _check_bytes(entry[1], f"sealed seed of party {index}")
    missing = [k for k in range(len(keys)) if k != own_index and k not in by_sender]
    if missing:
        raise SharingError(f"no sealed seed from parties {missing}: every other party must "
                           f"send exactly one")
    return [(keys[k], by_sender[k]) for k in sorted(by_sender)]


def open_seeded_and_sum(private_key: bytes, public_keys: Sequence[bytes], round_id: str,
                        correction: bytes,
                        sealed_seeds: Sequence[tuple[bytes, bytes]]) -> SharedStateDict:
    """An aggregator's partial sum in a seeded round: its own sealed correction share
    plus the shares expanded from the seeds every other party sealed to it, each
    verified as coming from that party for this round. Refuses fewer than 2 parties and
    anything but exactly one seed from each other party. The seeds are expanded in the
    ring of the correction, and the result is in that ring; otherwise it has the same
    form as ``open_and_sum``'s (this aggregator's party index).

        partial = open_seeded_and_sum(private_j, public_keys, "r4", correction_j,
                                      [(public_keys[k], seeds_k[j]) for k in others])
    """
    keys, own_index = _party_keys(public_keys, private_key)
    senders = _seeds_by_sender(sealed_seeds, keys, own_index)
    context = RoundContext(round_id, len(keys))
    total = open_correction(private_key, _check_bytes(correction, "sealed correction"), context)
    if (total.party, total.n_parties) != (own_index, len(keys)):
        raise SharingError(f"the correction is party {total.party}'s of {total.n_parties}, "
                           f"expected party {own_index}'s of {len(keys)}")
    seeds = []
    for sender, ciphertext in senders:
        try:
            seeds.append(open_seed(private_key, sender, ciphertext, context))
        except SharingError as exc:
            raise SharingError(f"seed of party {keys.index(sender)}: {exc}") from None
    return add_seeds_into(total, seeds)  # total came fresh from the wire: ours to add into
