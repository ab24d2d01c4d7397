"""The domain's append-only audit log: ``STATE_DIR/audit.jsonl``, one JSON object a line.

Each record is a single ``os.write`` to a file opened with O_APPEND, then fsynced,
so records of concurrent writers (threads or processes) never interleave. Detail
values under secret-sounding keys are replaced by ``[redacted]``; so is any value
that looks like a JWT. Readers skip a torn line left by a crash.

The log rotates by size: when the next line would take ``audit.jsonl`` past ``max_bytes``
(``start --audit-max-mb``, default 50), it becomes ``audit.jsonl.1`` (the older ones
shift up) and at most ``keep`` old files stay (``start --audit-keep``, default 5); readers
read them all, oldest first. Every decision about an authenticated account is written in
full. Refusals of anonymous requests (no valid token) are sampled: in each
``sample_window_seconds`` window, the first ``sample_first`` of each path and reason
(and at most 200 in all) in full, the rest counted, by reason and path, in one
``auth.refused.sampled`` line when the next window begins, so that a flood of junk
cannot fill the disk.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from collections import Counter, deque
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from common.errors import PneumoSyftError
from domain_setup.server.tokens import duration_seconds

AUDIT_FILE = "audit.jsonl"
DEFAULT_MAX_BYTES = 50 * 2**20
DEFAULT_KEEP = 5
SAMPLE_WINDOW_SECONDS = 60.0
SAMPLE_FIRST = 20  # per path and reason, per window
SAMPLE_CAP = 200  # anonymous lines per window in all
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

    def __init__(self, state_dir: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 keep: int = DEFAULT_KEEP, sample_window_seconds: float = SAMPLE_WINDOW_SECONDS,
                 sample_first: int = SAMPLE_FIRST):
        if max_bytes < 1024 or keep < 1:
            raise ValueError("the audit log needs at least 1 KB and one kept file")
        self.path = Path(state_dir) / AUDIT_FILE
        self.max_bytes, self.keep = int(max_bytes), int(keep)
        self._lock = threading.Lock()
        self._sampler = _AnonymousSampler(sample_window_seconds, sample_first)
        # called with every entry written, and with every anonymous refusal (written or
        # only counted): the server's metrics (`server/metrics.py`)
        self.observers: list[Callable[[dict], None]] = []

    def refused_anonymous(self, path: str, *, status: int, reason: str) -> None:
        """A request without a valid token was refused: written in full while the window
        has room, else counted (see the module docstring)."""
        with self._lock:
            write, summary = self._sampler.take(path, reason)
        if summary:
            self.record("anonymous", "auth.refused.sampled", outcome="refused", **summary)
        if write:
            self.record("anonymous", "auth", target=path, outcome="refused", status=status,
                        reason=reason)
        else:
            self._notify({"actor": "anonymous", "action": "auth", "outcome": "refused",
                          "status": status})

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
        self._notify(entry)
        return entry

    def _notify(self, entry: dict) -> None:
        for observer in self.observers:
            observer(entry)

    def _open_current(self) -> int:
        """The current file, opened and locked (reopened if another process rotated it)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            # another process may be mid-write: without the lock its half line would look
            # like a torn one and we would split it
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def _rotate(self) -> None:
        """audit.jsonl -> .1 -> .2 ...; the oldest beyond `keep` is removed."""
        oldest = self._rotated(self.keep)
        oldest.unlink(missing_ok=True)
        for number in range(self.keep - 1, 0, -1):
            if self._rotated(number).exists():
                os.replace(self._rotated(number), self._rotated(number + 1))
        os.replace(self.path, self._rotated(1))

    def _rotated(self, number: int) -> Path:
        return self.path.with_name(f"{AUDIT_FILE}.{number}")

    def _append(self, line: bytes) -> None:
        fd = self._open_current()
        try:
            size = os.fstat(fd).st_size
            if size and size + len(line) + 1 > self.max_bytes:
                self._rotate()  # under the old file's lock: other writers reopen
                os.close(fd)
                fd = self._open_current()
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

    def _files(self) -> list[Path]:
        """The rotated files, oldest first, then the current one."""
        rotated = []
        for path in self.path.parent.glob(f"{AUDIT_FILE}.*"):
            suffix = path.name[len(AUDIT_FILE) + 1:]
            if suffix.isdigit():
                rotated.append((int(suffix), path))
        return [path for _, path in sorted(rotated, reverse=True)] + [self.path]

    def _entries(self) -> Iterator[dict]:
        for path in self._files():
            try:
                handle = open(path, "rb")
            except FileNotFoundError:
                continue
            with handle:
                yield from _parsed(handle)

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


    def page(self, *, actor: str | None = None, action: str | None = None,
             outcome: str | None = None, target: str | None = None,
             since: datetime | None = None, until: datetime | None = None,
             offset: int = 0, limit: int = 100) -> list[dict]:
        """Newest first: the entries `offset` to `offset + limit` that match every filter
        given (`action` as in `read`; `until` is exclusive). Files are read from their end,
        so the first pages of a long log cost what they show, not the whole log."""
        since = _to_log_resolution(_as_utc(since)) if since is not None else None
        until = _to_log_resolution(_as_utc(until)) if until is not None else None
        needles = [json.dumps(v).encode() for v in (actor, target)  # a cheap pre-filter
                   if v and json.dumps(v)[1:-1] == v]
        kept: list[dict] = []
        skipped = 0
        for path in reversed(self._files()):
            try:
                lines = path.read_bytes().splitlines()
            except FileNotFoundError:
                continue
            for raw in reversed(lines):
                if needles and not all(n.lower() in raw.lower() for n in needles):
                    continue
                entry = next(_parsed([raw]), None)
                if entry is None:
                    continue
                if actor and str(entry.get("actor", "")).lower() != actor.lower():
                    continue
                if action and not _action_matches(str(entry.get("action", "")), action):
                    continue
                if outcome and str(entry.get("outcome", "")) != outcome:
                    continue
                if target and str(entry.get("target", "")) != target:
                    continue
                if until is not None and _at_or_after(entry, until):
                    continue
                if since is not None and not _at_or_after(entry, since):
                    return kept  # newest first: everything further is older still
                if skipped < offset:
                    skipped += 1
                    continue
                kept.append(entry)
                if len(kept) >= limit:
                    return kept
        return kept


def _parsed(handle: Any) -> Iterator[dict]:
    for raw in handle:
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except ValueError:  # a torn line from a crash, or garbage
            continue
        if isinstance(entry, dict):
            yield entry


class _AnonymousSampler:
    """Which anonymous refusals to write: per window, the first `first` of each (path,
    reason) and at most `cap` in all; the rest are counted and summarised when the next
    window begins (`take`)."""

    def __init__(self, window_seconds: float, first: int, cap: int = SAMPLE_CAP):
        self.window_seconds, self.first, self.cap = float(window_seconds), int(first), int(cap)
        self._new_window()

    def _new_window(self) -> None:
        self._start, self._started_at = time.monotonic(), _utc_now_text()
        self._written: Counter = Counter()
        self._reasons: Counter = Counter()
        self._paths: Counter = Counter()

    def take(self, path: str, reason: str) -> tuple[bool, dict | None]:
        """(write this one in full?, the previous window's summary or None)."""
        summary = None
        if time.monotonic() - self._start >= self.window_seconds:
            summary = self._summary()
            self._new_window()
        key = (path[:200], reason[:200])
        if self._written[key] < self.first and sum(self._written.values()) < self.cap:
            self._written[key] += 1
            return True, summary
        self._reasons[key[1]] += 1
        self._paths[key[0]] += 1
        return False, summary

    def _summary(self) -> dict | None:
        count = sum(self._reasons.values())
        if not count:
            return None
        return {"count": count, "since": self._started_at,
                # [text, count] pairs: a reason is no key (keys naming tokens are redacted)
                "reasons": [list(pair) for pair in self._reasons.most_common(20)],
                "paths": [list(pair) for pair in self._paths.most_common(20)]}


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
