"""The domain's JWTs: signing keys, issuing, verifying and revoking.

Each domain keeps its own signing key in ``STATE_DIR/keys`` and a registry of the
tokens it issued in ``STATE_DIR/tokens.json``. A token is valid only when it is
signed with the domain's configured algorithm and key, names this domain as
issuer and audience, is within its lifetime, and is listed, unrevoked, in the
registry. Verification of EdDSA and RS256 tokens uses the public key only.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import re
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from common.errors import PneumoSyftError, TokenError
from domain_setup.policy.roles import ROLES
from common.secure_files import (
    ensure_private_dir,
    read_json,
    read_secret,
    write_bytes_atomic,
    write_json_atomic,
)

ALGORITHMS = ("EdDSA", "RS256", "HS256")
REQUIRED_CLAIMS = ("iss", "aud", "sub", "role", "iat", "nbf", "exp", "jti")
DEFAULT_TTL_SECONDS = 8 * 3600
MAX_TTL_SECONDS = 30 * 24 * 3600
LEEWAY_SECONDS = 30
MAX_TOKEN_CHARS = 8192
RSA_KEY_BITS = 3072
HS256_SECRET_BYTES = 32
PRUNE_AFTER_SECONDS = 7 * 24 * 3600  # registry keeps expired tokens this long

PRIVATE_KEY_FILE = "jwt_private.pem"
PUBLIC_KEY_FILE = "jwt_public.pem"
HS256_SECRET_FILE = "jwt_hs256.secret"
CONFIG_FILE = "jwt.json"
REGISTRY_FILE = "tokens.json"
LOCK_FILE = ".tokens.lock"

_JTI_RE = re.compile(r"[0-9a-f]{32}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
_DURATION_RE = re.compile(r"\s*(\d{1,9})\s*([smhd]?)\s*", re.IGNORECASE | re.ASCII)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


# -- small parsers -----------------------------------------------------------------
def duration_seconds(text: str, *, allow_bare: bool = True) -> int:
    """Seconds in "90", "3600s", "30m", "8h" or "2d"; ValueError if it is none of these."""
    match = _DURATION_RE.fullmatch(str(text))
    if not match or (not allow_bare and not match.group(2)):
        raise ValueError(f"not a duration: {text!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]


def parse_ttl(text: str | int) -> int:
    """A token lifetime in seconds, from "8h", "30m", "2d", "3600s" or "90"; at most 30 days."""
    try:
        seconds = duration_seconds(str(text))
    except ValueError:
        raise TokenError(f"invalid ttl {str(text)[:40]!r}: use a number of seconds or "
                         f"a number with s, m, h or d (e.g. 8h)") from None
    if seconds <= 0:
        raise TokenError("invalid ttl: it must be longer than 0 seconds")
    if seconds > MAX_TTL_SECONDS:
        raise TokenError(f"ttl {text} is too long: at most 30d")
    return seconds


def bearer_token(authorization: str | None) -> str:
    """The JWT in an ``Authorization: Bearer <JWT>`` header value."""
    if authorization is None or not authorization.strip():
        raise TokenError("missing token")
    parts = authorization.strip().split(None, 1)
    if parts[0].lower() != "bearer":
        raise TokenError("authorization scheme must be Bearer")
    if len(parts) == 1:
        raise TokenError("missing token")
    return parts[1].strip()


def _check_jti(jti: Any) -> str:
    if not isinstance(jti, str) or not _JTI_RE.fullmatch(jti):
        raise TokenError(f"invalid token id {str(jti)[:40]!r}: "
                         f"expected 32 lowercase hex characters")
    return jti


def _b64url_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded))


def _unverified_header(token: str) -> dict:
    """The header of a token that is well formed (three base64url parts, JSON objects)."""
    parts = token.split(".")
    if len(token) > MAX_TOKEN_CHARS or len(parts) != 3 or not parts[0] or not parts[1] \
            or not all(_B64URL_RE.fullmatch(p) for p in parts):
        raise TokenError("malformed token")
    try:
        header, payload = _b64url_json(parts[0]), _b64url_json(parts[1])
    except (binascii.Error, ValueError):  # JSONDecodeError and UnicodeDecodeError included
        raise TokenError("malformed token") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise TokenError("malformed token")
    return header


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- keys ----------------------------------------------------------------------------
class _Keys:
    """The signing key and the verification key of one algorithm."""

    def __init__(self, signing: Any, verifying: Any):
        self.signing = signing
        self.verifying = verifying

    @staticmethod
    def generate(algorithm: str) -> tuple[dict[str, bytes], "_Keys"]:
        """New keys, with the file contents that store them."""
        if algorithm == "HS256":
            secret = secrets.token_bytes(HS256_SECRET_BYTES)
            return {HS256_SECRET_FILE: secret.hex().encode()}, _Keys(secret, secret)
        if algorithm == "RS256":
            private: Any = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
        else:
            private = ed25519.Ed25519PrivateKey.generate()
        files = {
            PRIVATE_KEY_FILE: private.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()),
            PUBLIC_KEY_FILE: _public_pem(private.public_key()),
        }
        return files, _Keys(private, private.public_key())

    @staticmethod
    def load(keys_dir: Path, algorithm: str) -> "_Keys":
        try:
            if algorithm == "HS256":
                secret = bytes.fromhex(read_secret(keys_dir / HS256_SECRET_FILE).decode().strip())
                if len(secret) != HS256_SECRET_BYTES:
                    raise ValueError("wrong length")
                return _Keys(secret, secret)
            private = serialization.load_pem_private_key(
                read_secret(keys_dir / PRIVATE_KEY_FILE), password=None)
            public = serialization.load_pem_public_key((keys_dir / PUBLIC_KEY_FILE).read_bytes())
        except PneumoSyftError as exc:
            raise TokenError(f"cannot load the JWT signing key: {exc}") from None
        except (OSError, ValueError, TypeError) as exc:
            raise TokenError(f"cannot load the JWT signing key from {keys_dir}: "
                             f"{type(exc).__name__}") from None
        expected = rsa.RSAPrivateKey if algorithm == "RS256" else ed25519.Ed25519PrivateKey
        if not isinstance(private, expected):
            raise TokenError(f"{keys_dir / PRIVATE_KEY_FILE} is not an {algorithm} key")
        if _public_pem(private.public_key()) != _public_pem(public):
            raise TokenError(f"{keys_dir / PUBLIC_KEY_FILE} does not match the private key")
        return _Keys(private, public)


def _public_pem(public: Any) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


# -- the registry of issued tokens ---------------------------------------------------
# registry files this thread is updating, each with the changes queued by re-entrant calls
_HELD_REGISTRIES = threading.local()


class _Registry:
    """``tokens.json``: issued tokens and revocations, shared by processes.

    Reads are cached and refreshed when the file's inode, size or mtime changes;
    changes take an exclusive lock file and re-read the file first, so that a
    CLI process and the server never lose each other's updates.
    """

    def __init__(self, state_dir: Path):
        self.path = state_dir / REGISTRY_FILE
        self._lock_path = state_dir / LOCK_FILE
        self._thread_lock = threading.RLock()
        self._signature: tuple[int, int, int] | None = None
        self._tokens: dict[str, dict] = {}

    def _stat_signature(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def _refresh(self, force: bool = False) -> None:
        signature = self._stat_signature()
        if not force and signature == self._signature:
            return
        if signature is None:
            self._tokens = {}
        else:
            try:
                data = read_json(self.path, private=True)
                tokens = {str(r["jti"]): dict(r) for r in data["tokens"]}
            except PneumoSyftError as exc:
                raise TokenError(f"token registry unreadable: {exc}") from None
            except (KeyError, TypeError, ValueError):
                raise TokenError(f"token registry {self.path} is malformed") from None
            self._tokens = tokens
        self._signature = signature

    def get(self, jti: str) -> dict | None:
        with self._thread_lock:
            self._refresh()
            record = self._tokens.get(jti)
            return dict(record) if record else None

    def all(self) -> list[dict]:
        with self._thread_lock:
            self._refresh()
            return [dict(r) for r in sorted(self._tokens.values(), key=lambda r: r["iat"])]

    def update(self, change: Any) -> Any:
        """Apply `change(tokens) -> result` to fresh registry contents and save them.

        Called again on a thread already inside an update of the same registry file (a
        garbage-collected admin session's finalizer revoking its token in the middle of
        a write: another `_Registry` would wait for the flock this thread holds, for
        ever), the change is queued, applied and saved by the update in progress, and
        None is returned."""
        key = str(self.path)
        held = _HELD_REGISTRIES.__dict__.setdefault("queued", {})
        if key in held:
            held[key].append(change)
            return None
        held[key] = []
        with self._thread_lock:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._refresh(force=True)
                tokens = {k: dict(v) for k, v in self._tokens.items()}
                try:
                    result = change(tokens)
                except BaseException:  # the change fails; what was queued meanwhile holds
                    self._apply(held[key], {k: dict(v) for k, v in self._tokens.items()})
                    raise
                self._save(tokens)
                self._apply(held[key], tokens)
                return result
            finally:
                del held[key]
                os.close(fd)  # releases the flock

    def _apply(self, queued: list, tokens: dict[str, dict]) -> None:
        """Apply and save the changes queued by re-entrant calls, in order."""
        while queued:
            try:
                queued.pop(0)(tokens)
            except TokenError:  # e.g. a token revoked twice: its caller ignores it
                continue
            self._save(tokens)

    def _save(self, tokens: dict[str, dict]) -> None:
        write_json_atomic(self.path, {"version": 1, "tokens": list(tokens.values())})
        self._tokens = tokens
        self._signature = self._stat_signature()


# -- the authority -------------------------------------------------------------------
class TokenAuthority:
    """Issues, verifies and revokes the JWTs of one domain."""

    def __init__(self, state_dir: str | os.PathLike, algorithm: str, issuer: str, audience: str,
                 keys: _Keys):
        self.state_dir = Path(state_dir)
        self.algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        self._keys = keys
        self._registry = _Registry(self.state_dir)

    # -- construction ------------------------------------------------------------------
    @staticmethod
    def _keys_dir(state_dir: str | os.PathLike) -> Path:
        return Path(state_dir) / "keys"

    @classmethod
    def exists(cls, state_dir: str | os.PathLike) -> bool:
        return (cls._keys_dir(state_dir) / CONFIG_FILE).exists()

    @classmethod
    def create(cls, state_dir: str | os.PathLike, issuer: str, audience: str,
               algorithm: str = "EdDSA") -> "TokenAuthority":
        """Generate and store a new signing key for this domain; refuses to replace one."""
        if algorithm not in ALGORITHMS:
            raise TokenError(f"unknown JWT algorithm {algorithm!r}; one of {', '.join(ALGORITHMS)}")
        if not issuer or not audience:
            raise TokenError("a token authority needs a non-empty issuer and audience")
        if cls.exists(state_dir):
            raise TokenError(f"{cls._keys_dir(state_dir)} already holds a JWT signing key")
        ensure_private_dir(state_dir)
        keys_dir = ensure_private_dir(cls._keys_dir(state_dir))
        files, keys = _Keys.generate(algorithm)
        for name, data in files.items():
            mode = 0o644 if name == PUBLIC_KEY_FILE else 0o600
            write_bytes_atomic(keys_dir / name, data, mode)
        # Written last: a crash before this leaves no half-made authority behind.
        write_json_atomic(keys_dir / CONFIG_FILE,
                          {"algorithm": algorithm, "issuer": issuer, "audience": audience})
        return cls(state_dir, algorithm, issuer, audience, keys)

    @classmethod
    def load(cls, state_dir: str | os.PathLike) -> "TokenAuthority":
        """The authority stored in `state_dir` by `create`."""
        keys_dir = cls._keys_dir(state_dir)
        if not cls.exists(state_dir):
            raise TokenError(f"no JWT signing key in {keys_dir}; start the domain first")
        try:
            config = read_json(keys_dir / CONFIG_FILE)
            algorithm, issuer, audience = (str(config[k]) for k in
                                           ("algorithm", "issuer", "audience"))
        except PneumoSyftError as exc:
            raise TokenError(str(exc)) from None
        except (KeyError, TypeError):
            raise TokenError(f"{keys_dir / CONFIG_FILE} lacks algorithm, issuer or audience") \
                from None
        if algorithm not in ALGORITHMS:
            raise TokenError(f"{keys_dir / CONFIG_FILE}: unknown JWT algorithm {algorithm!r}")
        return cls(state_dir, algorithm, issuer, audience, _Keys.load(keys_dir, algorithm))

    @classmethod
    def load_or_create(cls, state_dir: str | os.PathLike, issuer: str, audience: str,
                       algorithm: str = "EdDSA") -> "TokenAuthority":
        """Load the stored authority (which must match), or create it on first start."""
        if not cls.exists(state_dir):
            return cls.create(state_dir, issuer, audience, algorithm)
        authority = cls.load(state_dir)
        stored = (authority.issuer, authority.audience, authority.algorithm)
        if stored != (issuer, audience, algorithm):
            raise TokenError(
                f"the JWT key in {cls._keys_dir(state_dir)} was made for issuer {stored[0]!r}, "
                f"audience {stored[1]!r}, {stored[2]}; not {issuer!r}, {audience!r}, {algorithm}"
            )
        return authority

    # -- issuing and revoking ----------------------------------------------------------
    def issue(self, email: str, role: str, ttl_seconds: int = DEFAULT_TTL_SECONDS,
              now: float | None = None) -> tuple[str, dict]:
        """Sign a token for `email` with `role`, record it, and return it with its claims."""
        if not isinstance(email, str) or not email.strip():
            raise TokenError("a token needs a subject email")
        if role not in ROLES:
            raise TokenError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if not _is_int(ttl_seconds) or not 0 < ttl_seconds <= MAX_TTL_SECONDS:
            raise TokenError(f"ttl must be 1 to {MAX_TTL_SECONDS} seconds")
        issued_at = int(time.time() if now is None else now)
        claims = {"iss": self.issuer, "aud": self.audience, "sub": email, "role": role,
                  "iat": issued_at, "nbf": issued_at, "exp": issued_at + ttl_seconds,
                  "jti": uuid.uuid4().hex}
        token = jwt.encode(claims, self._keys.signing, algorithm=self.algorithm)
        record = {"jti": claims["jti"], "sub": email, "role": role, "iat": issued_at,
                  "exp": claims["exp"], "revoked": False, "revoked_at": None, "reason": ""}

        def add(tokens: dict[str, dict]) -> None:
            horizon = issued_at - PRUNE_AFTER_SECONDS
            for jti in [j for j, r in tokens.items() if r["exp"] < horizon]:
                del tokens[jti]
            tokens[record["jti"]] = record

        self._registry.update(add)
        return token, dict(claims)

    def revoke(self, jti: str, reason: str = "", now: float | None = None) -> dict:
        """Revoke an issued token by its id; revoking twice keeps the first revocation."""
        _check_jti(jti)
        revoked_at = int(time.time() if now is None else now)

        def mark(tokens: dict[str, dict]) -> dict:
            record = tokens.get(jti)
            if record is None:
                raise TokenError(f"unknown token id {jti}")
            if not record["revoked"]:
                record.update(revoked=True, revoked_at=revoked_at, reason=str(reason)[:200])
            return dict(record)

        return self._registry.update(mark)

    def list_tokens(self) -> list[dict]:
        """Issued tokens (oldest first): jti, sub, role, iat, exp, revoked, revoked_at, reason."""
        return self._registry.all()

    # -- verifying ---------------------------------------------------------------------
    def verify(self, token: str | None, now: float | None = None) -> dict:
        """The claims of a valid token of this domain; TokenError with a short reason if not."""
        if token is None or not isinstance(token, str) or not token.strip():
            raise TokenError("missing token")
        header = _unverified_header(token)
        if header.get("alg") != self.algorithm:
            raise TokenError("algorithm not allowed")
        claims = self._decode(token)
        self._check_times(claims, time.time() if now is None else now)
        if claims["role"] not in ROLES:
            raise TokenError("unknown role")
        if not isinstance(claims["jti"], str) or not _JTI_RE.fullmatch(claims["jti"]):
            raise TokenError("unknown token")
        record = self._registry.get(claims["jti"])
        if record is None or record["sub"] != claims["sub"] or record["role"] != claims["role"]:
            raise TokenError("unknown token")
        if record["revoked"]:
            raise TokenError("token revoked")
        return claims

    def _decode(self, token: str) -> dict:
        """Signature, issuer, audience and presence of claims, checked by PyJWT."""
        options = {"require": list(REQUIRED_CLAIMS), "strict_aud": True,
                   # times are checked by _check_times, against an injectable clock
                   "verify_exp": False, "verify_nbf": False, "verify_iat": False}
        try:
            return jwt.decode(token, self._keys.verifying, algorithms=[self.algorithm],
                              audience=self.audience, issuer=self.issuer, options=options)
        except jwt.InvalidSignatureError:
            raise TokenError("bad signature") from None
        except jwt.InvalidAlgorithmError:
            raise TokenError("algorithm not allowed") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"missing claim {exc.claim}") from None
        except jwt.InvalidIssuerError:
            raise TokenError("wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise TokenError("wrong audience") from None
        except jwt.InvalidTokenError:  # DecodeError, bad sub/jti types, ...
            raise TokenError("malformed token") from None

    @staticmethod
    def _check_times(claims: dict, now: float) -> None:
        if not all(_is_int(claims[k]) for k in ("iat", "nbf", "exp")):
            raise TokenError("malformed token")
        if now >= claims["exp"]:
            raise TokenError("token expired")
        if claims["nbf"] > now + LEEWAY_SECONDS or claims["iat"] > now + LEEWAY_SECONDS:
            raise TokenError("token not yet valid")


__all__ = ["TokenAuthority", "parse_ttl", "bearer_token", "duration_seconds", "ALGORITHMS",
           "ROLES", "MAX_TTL_SECONDS"]
