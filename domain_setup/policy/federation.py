"""The federation: the other hospitals this one runs secure rounds with, as its admin lists them.

A secure round names its parties by their aggregation public keys, and any K-1 of them
together could open the K-th hospital's contribution. So the parties cannot be the
researcher's choice: a round is a violation unless every key in it is this hospital's
own or a member's, this hospital is one of them, and its total is at least this
hospital's own count (`round_problems`). The admin keeps the list with
``python -m domain_setup federation members add|remove|list`` (audited); it lives in the
state directory (``federation_members.json``) and is part of the policy snapshot the
domain decides on.

    members = FederationMembers.of([Member("Royal Infirmary", "http://10.0.0.2:8081", key)])
    members.round_problems(spec, own_key=my_key, own_count=640)   # [] when fine
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from common.errors import PolicyError, SharingError
from common.secure_files import write_json_atomic

MEMBERS_FILE = "federation_members.json"
MAX_MEMBERS = 511  # a round has at most 512 parties, this hospital included
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,100}")


def _printable(text: str) -> bool:
    """No control, format (bidi overrides), line or paragraph separator character: a name
    is printed on the admin's terminal as it is."""
    import unicodedata

    return not any(unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp")
                   for c in text)


@dataclass(frozen=True)
class Member:
    """Another hospital of the federation: its name, its domain's URL, its aggregation key,
    and, when it came from a federation card, its TLS fingerprint and card signing key."""

    name: str
    url: str
    public_key: str
    tls_fingerprint: str | None = None
    signing_key: str | None = None

    @classmethod
    def checked(cls, name: Any, url: Any, public_key: Any, *, tls_fingerprint: Any = None,
                signing_key: Any = None) -> "Member":
        """A member from outside input (PolicyError with a one-line reason)."""
        from common.errors import DomainError
        from common.sealing import key_from_text, key_to_text
        from common.tls import normalize_fingerprint

        from common.connection import validate_url

        if not isinstance(name, str) or not _NAME.fullmatch(name.strip()) or \
                not _printable(name.strip()):
            raise PolicyError("a member's name is 1 to 100 printable characters")
        if name.strip().lower() == "this hospital":  # what a review calls this one
            raise PolicyError("a member may not be called \"this hospital\"")
        try:
            url = validate_url(url if isinstance(url, str) else "")
        except DomainError:
            raise PolicyError(f"a member's URL is http(s)://HOST:PORT, got {str(url)[:100]!r}") \
                from None
        try:
            key = key_to_text(key_from_text(public_key))
        except SharingError as exc:
            raise PolicyError(f"a member's aggregation public key: {exc}") from None
        try:
            pin = normalize_fingerprint(tls_fingerprint) if tls_fingerprint else None
        except DomainError as exc:
            raise PolicyError(f"a member's {exc}") from None
        if signing_key is not None and not re.fullmatch(r"[0-9a-f]{64}", str(signing_key)):
            raise PolicyError("a member's card signing key is 64 lowercase hex digits")
        return cls(name.strip(), url, key, pin, signing_key)

    def to_dict(self) -> dict:
        extra = {k: v for k, v in (("tls_fingerprint", self.tls_fingerprint),
                                   ("signing_key", self.signing_key)) if v}
        return {"name": self.name, "url": self.url, "public_key": self.public_key, **extra}

    @classmethod
    def from_dict(cls, data: Any) -> "Member":
        """A member as `to_dict` wrote it (PolicyError when it is not one)."""
        if not isinstance(data, dict):
            raise PolicyError("a member is a JSON object")
        return cls.checked(data.get("name"), data.get("url"), data.get("public_key"),
                           tls_fingerprint=data.get("tls_fingerprint"),
                           signing_key=data.get("signing_key"))


@dataclass(frozen=True)
class FederationMembers:
    """The members, by name (unique) and by key (unique)."""

    members: tuple[Member, ...] = ()

    @classmethod
    def of(cls, members: Iterable[Member]) -> "FederationMembers":
        members = tuple(members)
        if len({m.name.lower() for m in members}) != len(members):
            raise PolicyError("two members have the same name")
        if len({m.public_key for m in members}) != len(members):
            raise PolicyError("two members have the same aggregation key")
        if len(members) > MAX_MEMBERS:
            raise PolicyError(f"a federation has at most {MAX_MEMBERS} other members")
        return cls(members)

    def by_key(self, public_key: bytes) -> Member | None:
        """The member whose aggregation key is `public_key` (bytes), or None."""
        from common.sealing import key_from_text

        return next((m for m in self.members if key_from_text(m.public_key) == public_key), None)

    def adding(self, member: Member) -> "FederationMembers":
        """The list with `member` added (PolicyError if its name or key is taken)."""
        return FederationMembers.of(self.members + (member,))

    def removing(self, name: str) -> "FederationMembers":
        """The list without the member called `name` (PolicyError if there is none)."""
        kept = tuple(m for m in self.members if m.name.lower() != name.strip().lower())
        if len(kept) == len(self.members):
            raise PolicyError(f"no member called {name[:100]!r}")
        return FederationMembers(kept)

    def party_names(self, spec: Any, own_key: bytes | None) -> list[str]:
        """The round's parties by name: "this hospital", a member's name, or "NOT A MEMBER"."""
        names = []
        for key in spec.keys():
            member = self.by_key(key)
            names.append("this hospital" if key == own_key else
                         member.name if member else "NOT A MEMBER")
        return names

    def round_problems(self, spec: Any, *, own_key: bytes | None, own_count: int | None) -> list[str]:
        """Why this hospital may not take part in `spec`'s round (empty: it may).

        `own_key` is this hospital's aggregation public key (None: federation not enabled);
        `own_count` the images it would train on (None: unknown yet)."""
        if own_key is None:
            return ["this hospital is not an aggregation party (federation enable)"]
        problems = []
        keys = spec.keys()
        if own_key not in keys:
            problems.append("the round does not name this hospital's aggregation key")
        strangers = [i for i, key in enumerate(keys) if key != own_key and self.by_key(key) is None]
        if strangers:
            problems.append(
                f"the round's part{'ies' if len(strangers) > 1 else 'y'} "
                f"{', '.join(map(str, strangers))} "
                f"{'are' if len(strangers) > 1 else 'is'} not a member of this hospital's "
                "federation (python -m domain_setup federation members list)")
        if own_count is not None and spec.total_samples < own_count:
            problems.append(f"the round's total of {spec.total_samples} images is below the "
                            f"{own_count} this hospital trains on")
        return problems


def load_members(state_root: str | Path) -> FederationMembers:
    """The members kept in the state directory (none before the first `members add`)."""
    path = Path(state_root) / MEMBERS_FILE
    if not path.exists():
        return FederationMembers()
    try:
        data = json.loads(path.read_text())
        return FederationMembers.of(Member.from_dict(m) for m in data["members"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PolicyError(f"{path}: not a federation member list ({exc})") from None


def save_members(state_root: str | Path, members: FederationMembers) -> None:
    """Write the member list atomically (0600, like every file of the state directory)."""
    write_json_atomic(Path(state_root) / MEMBERS_FILE,
                      {"members": [m.to_dict() for m in members.members]})
