"""Federation cards: what one hospital's admin hands another to join their federations.

A card names the hospital, the URL researchers reach its domain at, the SHA-256
fingerprint of the TLS certificate it serves, and its aggregation public key, and is
signed (Ed25519) with the domain's own signing key (its syft identity, in the state
directory). ``federation card`` prints it; the other admin's ``federation members add
CARD-FILE`` checks the signature and the fields, then adds the member (audited). The
signature proves the card was not altered on its way and comes from the holder of that
key; that the key is the other hospital's is what the two admins confirm by comparing the
card's short ``key_id`` over the phone, as with any first key exchange.

    card = make_card(state, url="https://10.0.0.2:8443")   # dict, json.dumps to send it
    card = read_card("royal-infirmary.card.json")          # DomainError when not valid
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from common.errors import DomainError, PolicyError
from domain_setup.aggregation_key import published_public_key_text
from domain_setup.exposure import is_loopback
from domain_setup.tls_certificate import fingerprint

CARD_VERSION = 1
MAX_CARD_BYTES = 16 * 1024
_SIGNED_FIELDS = ("pneumosyft_federation_card", "name", "url", "tls_fingerprint",
                  "aggregation_public_key", "signing_key", "created")


def _message(card: dict) -> bytes:
    """The bytes a card's signature covers: its fields, canonical JSON."""
    return json.dumps({k: card.get(k) for k in _SIGNED_FIELDS}, sort_keys=True,
                      separators=(",", ":")).encode()


def _no_duplicates(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"the field {twice[0]!r} is there twice")
    return dict(pairs)


def key_id(card: dict) -> str:
    """A short digest of the card's signing key, for the two admins to compare aloud."""
    digest = hashlib.sha256(bytes.fromhex(card["signing_key"])).hexdigest()[:20].upper()
    return "-".join(digest[i:i + 4] for i in range(0, 20, 4))


def make_card(state: Any, *, url: str | None = None) -> dict:
    """This hospital's signed card; `url` is the address others reach it at (default: the
    domain's own URL, which is a loopback one when it listens on 127.0.0.1 or 0.0.0.0)."""
    from nacl.signing import SigningKey

    config = state.load_config()
    public_key = published_public_key_text(state)
    if public_key is None:
        raise DomainError("this hospital is not an aggregation party yet: run "
                          "`python -m domain_setup federation enable` first")
    pin = fingerprint(config)  # reads the certificate file once
    card_url = _checked_url(url or config.url, pin)
    signing = SigningKey(bytes.fromhex(state.load_or_create_identity().signing_key))
    card = {"pneumosyft_federation_card": CARD_VERSION, "name": config.name, "url": card_url,
            "tls_fingerprint": pin, "aggregation_public_key": public_key,
            "signing_key": bytes(signing.verify_key).hex(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    card["signature"] = signing.sign(_message(card)).signature.hex()
    return card


def read_card(path: str | Path) -> dict:
    """The card in `path`, its signature and fields checked (DomainError, one line)."""
    path = Path(path)
    try:
        raw = path.read_bytes()[:MAX_CARD_BYTES + 1]
    except OSError as exc:
        raise DomainError(f"cannot read the card {path}: {exc.strerror}") from None
    return parse_card(raw, source=str(path))


def parse_card(raw: bytes, *, source: str = "the card") -> dict:
    """A card from its bytes (a file's, or pasted in the console), its signature and
    fields checked (DomainError naming `source`, one line)."""
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    path = source
    if len(raw) > MAX_CARD_BYTES:
        raise DomainError(f"{path} is larger than a federation card ({MAX_CARD_BYTES} bytes)")
    try:
        card = json.loads(raw, object_pairs_hook=_no_duplicates)
    except ValueError as exc:
        reason = str(exc) if "twice" in str(exc) else "not JSON"
        raise DomainError(f"{path} is not a federation card ({reason})") from None
    if not isinstance(card, dict) or type(card.get("pneumosyft_federation_card")) is not int \
            or card["pneumosyft_federation_card"] != CARD_VERSION:
        raise DomainError(f"{path} is not a federation card (version {CARD_VERSION})")
    if any(not isinstance(card.get(k), str) for k in _SIGNED_FIELDS[1:] if k != "tls_fingerprint") \
            or not isinstance(card.get("tls_fingerprint"), (str, type(None))):
        raise DomainError(f"{path}: a card's fields are text (the fingerprint may be null)")
    try:
        signing_key, signature = bytes.fromhex(card["signing_key"]), \
            bytes.fromhex(card["signature"])
        VerifyKey(signing_key).verify(_message(card), signature)
    except (KeyError, TypeError, ValueError, BadSignatureError):
        raise DomainError(f"{path}: the card's signature does not verify (altered, or not "
                          "made by `federation card`)") from None
    _checked_url(card.get("url"), card.get("tls_fingerprint"))
    from domain_setup.policy.federation import Member

    try:
        Member.checked(card.get("name"), card.get("url"), card.get("aggregation_public_key"),
                       tls_fingerprint=card.get("tls_fingerprint"),
                       signing_key=card.get("signing_key"))
    except PolicyError as exc:
        raise DomainError(f"{path}: {exc}") from None
    return card


def _checked_url(url: Any, tls_fingerprint: str | None) -> str:
    """A card's URL: https with a fingerprint, or plain http on a loopback address only."""
    parsed = urlparse(url if isinstance(url, str) else "")
    if parsed.scheme == "https" and tls_fingerprint:
        return url.rstrip("/")
    if parsed.scheme == "http" and parsed.hostname and is_loopback(parsed.hostname):
        return url.rstrip("/")
    raise DomainError(f"a federation card's URL is https:// with the TLS fingerprint of the "
                      f"domain (start it with --tls-self-signed or --tls-cert), or http:// on "
                      f"this machine's loopback only; got {str(url)[:100]!r}")
