"""The domain's append-only audit log: ``STATE_DIR/audit.jsonl``, one JSON object a line.

Each record is a single ``os.write`` to a file opened with O_APPEND, then fsynced,
so records of concurrent writers (threads or processes) never interleave. Detail
values under secret-sounding keys are replaced by ``[redacted]``; so is any value
that looks like a JWT. Readers skip a torn line left by a crash.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from common.errors import PneumoSyftError
from domain_setup.server.tokens import duration_seconds

AUDIT_FILE = "audit.jsonl"
REDACTED = "[redacted]"
SECRET_KEY_WORDS = ("password", "passwd", "token", "secret", "key", "authorization",
                    "credential", "cookie")
MAX_VALUE_CHARS = 1000
_CORE_FIELDS = ("time", "actor", "action", "target", "outcome")
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def _is_secret_key(key: str) -> bool:
    """Whether a detail key names a secret (case-insensitive substring match)."""
    compact = re.sub(r"[^a-z]", "", key.lower())
    return any(word in compact for word in SECRET_KEY_WORDS)


def _clean(value: Any) -> Any:
    """A JSON-safe, bounded copy of a detail value with secrets removed."""
    if isinstance(value, dict):
        return {str(k): REDACTED if _is_secret_key(str(k)) else _clean(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = _JWT_RE.sub(REDACTED, str(value))
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."


def _utc_now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A UTC datetime from "2026-11-21", "2026-11-21T10:00" (UTC unless an offset is given),
    or an age before `now`: "30m", "1h", "2d"."""
    text = str(text).strip()
    try:
        age = duration_seconds(text, allow_bare=False)
    except ValueError:
        pass
    else:
        return _as_utc(now or datetime.now(timezone.utc)) - timedelta(seconds=age)
    try:
        return _as_utc(datetime.fromisoformat(text)).astimezone(timezone.utc)
    except ValueError:
        raise PneumoSyftError(f"invalid since {text[:40]!r}: use a date (2026-11-21), a UTC "
                              f"time (2026-11-21T10:00) or an age (30m, 1h, 2d)") from None


class AuditLog:
    """Append-only audit log of one domain."""

    def __init__(self, state_dir: str | os.PathLike):
        self.path = Path(state_dir) / AUDIT_FILE
        self._lock = threading.Lock()

    def record(self, actor: str, action: str, target: str = "", outcome: str = "ok",
               **details: Any) -> dict:
        """Append one entry and return it (as written, secrets redacted)."""
        entry: dict[str, Any] = {"time": _utc_now_text(), "actor": _clean(actor),
                                 "action": _clean(action), "target": _clean(target),
                                 "outcome": _clean(outcome)}
        for key, value in details.items():
            name = f"detail_{key}" if key in _CORE_FIELDS else key
            entry[name] = REDACTED if _is_secret_key(key) else _clean(value)
        line = json.dumps(entry, default=str).encode("utf-8") + b"\n"
        with self._lock:
            self._append(line)
        return entry

    def _append(self, line: bytes) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # another process may be mid-write: without the lock its half line would look
            # like a torn one and we would split it
            fcntl.flock(fd, fcntl.LOCK_EX)
            info = os.fstat(fd)
            if info.st_mode & 0o077:
                os.fchmod(fd, 0o600)
            # A crash may have left a torn last line: start ours on a fresh line.
            if info.st_size and os.pread(fd, 1, info.st_size - 1) != b"\n":
                line = b"\n" + line
            written = os.write(fd, line)
            while written < len(line):  # short writes happen only on errors like a full disk
                written += os.write(fd, line[written:])
            os.fsync(fd)
        finally:
            os.close(fd)

    def _entries(self) -> Iterator[dict]:
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return
        with handle:
            for raw in handle:
                if not raw.strip():
                    continue
                try:
                    entry = json.loads(raw)
                except ValueError:  # a torn line from a crash, or garbage
                    continue
                if isinstance(entry, dict):
                    yield entry

    def read(self, since: datetime | None = None, actor: str | None = None,
             action: str | None = None, limit: int | None = None) -> list[dict]:
        """Entries in order, filtered; `action` matches exactly or as a dotted prefix
        ("token" matches "token.issue"); `limit` keeps the most recent ones."""
        since = _to_log_resolution(_as_utc(since)) if since is not None else None
        kept: deque[dict] = deque(maxlen=max(limit, 0) if limit is not None else None)
        for entry in self._entries():
            if actor is not None and str(entry.get("actor", "")).lower() != actor.lower():
                continue
            if action is not None and not _action_matches(str(entry.get("action", "")), action):
                continue
            if since is not None and not _at_or_after(entry, since):
                continue
            kept.append(entry)
        return list(kept)


def _action_matches(entry_action: str, wanted: str) -> bool:
    return entry_action == wanted or entry_action.startswith(wanted.rstrip(".") + ".")


def _to_log_resolution(moment: datetime) -> datetime:
    """`moment` truncated to whole milliseconds, as entry times are written: an entry
    recorded in the same millisecond as `since`, but after it, is not left out."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _at_or_after(entry: dict, since: datetime) -> bool:
    try:
        return _as_utc(datetime.fromisoformat(str(entry["time"]))) >= since
    except (KeyError, ValueError):
        return False


__all__ = ["AuditLog", "parse_since", "REDACTED"]
