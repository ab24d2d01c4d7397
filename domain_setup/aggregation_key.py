"""The hospital's X25519 key for secure aggregation, kept in the state directory.

Other hospitals seal the shares addressed to this hospital with its public key;
only an approved aggregation plan running inside this domain opens them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import sealing

KEY_FILE = "aggregation_x25519.key"


def private_key_path(state: Any) -> Path:
    return Path(state.keys_dir) / KEY_FILE


def load_or_create_private_key(state: Any) -> bytes:
    """The hospital's aggregation private key, created (0600) on first use."""
    path = private_key_path(state)
    if path.exists():
        return sealing.load_private_key(path)
    private, _public = sealing.generate_keypair()
    sealing.save_private_key(path, private)
    return private


def public_key_text(state: Any) -> str:
    """The public key, as text others can put in a plan's configuration (creates the key)."""
    return sealing.key_to_text(sealing.public_key_from_private(load_or_create_private_key(state)))


def load_private_key_if_enabled(state: Any) -> bytes | None:
    """The private key once `federation enable` made one, else None (creates nothing)."""
    path = private_key_path(state)
    return sealing.load_private_key(path) if path.exists() else None


def published_public_key(state: Any) -> bytes | None:
    """The public key once `federation enable` made one, else None (never creates a key)."""
    private = load_private_key_if_enabled(state)
    return None if private is None else sealing.public_key_from_private(private)


def published_public_key_text(state: Any) -> str | None:
    """`published_public_key` as text others put in a round, or None."""
    public = published_public_key(state)
    return None if public is None else sealing.key_to_text(public)
