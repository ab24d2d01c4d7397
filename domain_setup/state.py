"""The domain's state directory: one folder holds everything a restart needs.

Layout (secrets are 0600, the folder itself 0700)::

    STATE_DIR/
      domain.json            name, host, port, database URL, admin email (0600)
      identity.json          server id and syft signing key (0600)
      admin_password         the root admin's generated password (0600)
      connection.json        URL + admin email for the admin CLI, no token (0600)
      account_passwords.json generated passwords of accounts (0600)
      keys/                  JWT signing key, aggregation (X25519) key
      tokens.json            issued tokens and revocations (.tokens.lock beside it)
      audit.jsonl            append-only audit log
      privacy.sqlite3        the privacy ledger: DP releases and grants (0600)
      db/ blob/ syft/        syft's database, blob storage and scratch space
      logs/domain.log        server log
      domain.pid             pid of the running server
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.errors import DomainError
from common.secure_files import (
    ensure_private_dir,
    read_json,
    read_secret,
    write_json_atomic,
    write_secret,
)

DEFAULT_ROOT_PASSWORD = "changethis"
ADMIN_PASSWORD_ENV = "PNEUMOSYFT_ADMIN_PASSWORD"
BACKUP_PASSPHRASE_ENV = "PNEUMOSYFT_BACKUP_PASSPHRASE"  # admin/backup.py; never the server's
STATE_DIR_ENV = "PNEUMOSYFT_STATE_DIR"
TLS_KEY = "tls"  # config.extra: the served certificate (domain_setup.tls_certificate)
MIN_PASSWORD_LENGTH = 12
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}$")


@dataclass
class DomainConfig:
    """What `start` needs to bring the same domain back after a restart."""

    name: str
    host: str = "127.0.0.1"
    port: int = 8080
    db_url: str | None = None
    admin_email: str = "admin@pneumosyft-hospital.org"
    jwt_algorithm: str = "EdDSA"
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if self.extra.get(TLS_KEY) else "http"
        return f"{scheme}://{host}:{self.port}"


@dataclass
class Identity:
    """The server's stable identity: syft server id and signing key (hex)."""

    server_id: str
    signing_key: str


def validate_name(name: str) -> str:
    """Domain names are short, printable and safe in file names and logs."""
    if not _NAME_RE.match(name or ""):
        raise DomainError(
            f"invalid domain name {name!r}: use 1-63 letters, digits, space, '.', '_' or '-'"
        )
    return name


def validate_password(password: str, *, what: str = "password") -> str:
    """Refuse the syft default and short passwords."""
    if password == DEFAULT_ROOT_PASSWORD:
        raise DomainError(f"{what} is syft's default password; choose another")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise DomainError(f"{what} is shorter than {MIN_PASSWORD_LENGTH} characters")
    return password


def generate_password() -> str:
    """A strong random password (about 190 bits)."""
    return secrets.token_urlsafe(24)


class StateDir:
    """Paths and small persisted records of one domain's state directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    # -- paths ---------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "domain.json"

    @property
    def identity_path(self) -> Path:
        return self.root / "identity.json"

    @property
    def admin_password_path(self) -> Path:
        return self.root / "admin_password"

    @property
    def connection_path(self) -> Path:
        return self.root / "connection.json"

    @property
    def account_passwords_path(self) -> Path:
        return self.root / "account_passwords.json"

    @property
    def pid_path(self) -> Path:
        return self.root / "domain.pid"

    @property
    def log_path(self) -> Path:
        return self.root / "logs" / "domain.log"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def db_dir(self) -> Path:
        return self.root / "db"

    @property
    def blob_dir(self) -> Path:
        return self.root / "blob"

    @property
    def syft_dir(self) -> Path:
        return self.root / "syft"

    def exists(self) -> bool:
        return self.config_path.exists()

    def create_dirs(self) -> None:
        """Create the directory tree, private to the hospital's user."""
        for d in (self.root, self.keys_dir, self.db_dir, self.blob_dir, self.syft_dir,
                  self.log_path.parent):
            ensure_private_dir(d)

    # -- records ---------------------------------------------------------------
    def load_config(self) -> DomainConfig:
        if not self.config_path.exists():
            raise DomainError(
                f"no domain in {self.root}: run `python -m domain_setup start --name NAME "
                f"--port PORT --state-dir {self.root}` first"
            )
        data = read_json(self.config_path)
        try:
            return DomainConfig(**data)
        except TypeError as exc:
            raise DomainError(f"{self.config_path}: unreadable domain config ({exc})") from None

    def save_config(self, config: DomainConfig) -> None:
        write_json_atomic(self.config_path, asdict(config))

    def load_or_create_identity(self) -> Identity:
        """The syft server id and signing key, created once and kept."""
        if self.identity_path.exists():
            data = json.loads(read_secret(self.identity_path))
            return Identity(server_id=data["server_id"], signing_key=data["signing_key"])
        from nacl.signing import SigningKey
        from syft.types.uid import UID

        identity = Identity(
            server_id=UID().no_dash, signing_key=bytes(SigningKey.generate()).hex()
        )
        write_json_atomic(self.identity_path, asdict(identity))
        return identity

    def load_or_create_admin_password(self) -> str:
        """The root admin password: from the environment on first start, else generated."""
        if self.admin_password_path.exists():
            return read_secret(self.admin_password_path).decode().strip()
        from_env = os.environ.get(ADMIN_PASSWORD_ENV)
        if from_env:
            password = validate_password(from_env, what=ADMIN_PASSWORD_ENV)
        else:
            password = generate_password()
        write_secret(self.admin_password_path, password)
        return password

    def admin_password(self) -> str:
        if not self.admin_password_path.exists():
            raise DomainError(f"{self.admin_password_path} is missing; was the domain started?")
        return read_secret(self.admin_password_path).decode().strip()

    def read_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None


def resolve_state_dir(path: str | None) -> StateDir:
    """The state dir from `--state-dir`, else $PNEUMOSYFT_STATE_DIR, else ./state."""
    return StateDir(path or os.environ.get(STATE_DIR_ENV) or "state")
