"""The audit log: append, read with filters, redaction, torn lines, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import stat
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from common.errors import PneumoSyftError
from domain_setup.server.audit import REDACTED, AuditLog, parse_since

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path)


def lines_of(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines()


def append_raw(log: AuditLog, entry: dict) -> None:
    """An entry as an earlier run would have written it (its time chosen by the test)."""
    with open(log.path, "a") as handle:
        handle.write(json.dumps(entry) + "\n")


# -- record and read ---------------------------------------------------------------------
def test_record_and_read(log: AuditLog) -> None:
    written = log.record("owner@stmary-hospital.org", "token.issue", target="ab" * 16,
                         subject="ada@pneumosyft-research.org", exp=1790000000)
    log.record("ada@pneumosyft-research.org", "auth", target="/api/v2/login", outcome="refused",
               reason="token expired", status=401)
    first, second = log.read()
    assert first == written
    assert TIME_RE.match(first["time"])
    assert first["actor"] == "owner@stmary-hospital.org" and first["action"] == "token.issue"
    assert first["target"] == "ab" * 16 and first["outcome"] == "ok"
    assert first["subject"] == "ada@pneumosyft-research.org" and first["exp"] == 1790000000
    assert second["outcome"] == "refused" and second["status"] == 401
    assert list(second)[:5] == ["time", "actor", "action", "target", "outcome"]
    assert len(lines_of(log)) == 2


def test_read_of_a_missing_log(log: AuditLog) -> None:
    assert log.read() == []


def test_details_cannot_overwrite_core_fields(log: AuditLog) -> None:
    entry = log.record("a@example.org", "x", time="yesterday")
    assert TIME_RE.match(entry["time"]) and entry["detail_time"] == "yesterday"


def test_one_line_per_record_even_with_newlines(log: AuditLog) -> None:
    log.record("a@example.org", "upload", target="evil\nname", note="line1\nline2\r\n")
    assert len(lines_of(log)) == 1
    assert log.read()[0]["target"] == "evil\nname"


# -- filters -----------------------------------------------------------------------------
def test_filter_by_actor(log: AuditLog) -> None:
    log.record("ada@pneumosyft-research.org", "login")
    log.record("owner@stmary-hospital.org", "token.issue")
    log.record("Ada@PneumoSyft-Research.org", "syft:code.submit")
    assert [e["action"] for e in log.read(actor="ada@pneumosyft-research.org")] == \
        ["login", "syft:code.submit"]


def test_filter_by_action(log: AuditLog) -> None:
    for action in ("token.issue", "token.revoke", "tokens", "login", "token.issue"):
        log.record("owner@stmary-hospital.org", action)
    assert len(log.read(action="token.issue")) == 2
    assert [e["action"] for e in log.read(action="token")] == \
        ["token.issue", "token.revoke", "token.issue"]
    assert log.read(action="nothing") == []


def test_filter_since(log: AuditLog) -> None:
    append_raw(log, {"time": "2026-11-20T09:00:00.000Z", "actor": "a", "action": "old"})
    append_raw(log, {"time": "2026-11-21T09:59:59.999Z", "actor": "a", "action": "before"})
    append_raw(log, {"time": "2026-11-21T10:00:00.000Z", "actor": "a", "action": "at"})
    log.record("a", "now")
    assert [e["action"] for e in log.read(since=parse_since("2026-11-21"))] == \
        ["before", "at", "now"]
    assert [e["action"] for e in log.read(since=parse_since("2026-11-21T10:00"))] == ["at", "now"]
    assert [e["action"] for e in log.read(since=parse_since("1h"))] == ["now"]
    naive = datetime(2026, 11, 21, 10, 0)  # taken as UTC
    assert [e["action"] for e in log.read(since=naive)] == ["at", "now"]


def test_since_within_the_same_millisecond_keeps_the_entry(log: AuditLog) -> None:
    append_raw(log, {"time": "2026-11-21T10:00:00.000Z", "actor": "a", "action": "earlier"})
    append_raw(log, {"time": "2026-11-21T10:00:00.007Z", "actor": "a", "action": "same ms"})
    since = datetime(2026, 11, 21, 10, 0, 0, 7400, tzinfo=timezone.utc)  # .0074, entry at .007xxx
    assert [e["action"] for e in log.read(since=since)] == ["same ms"]


def test_limit_keeps_the_most_recent(log: AuditLog) -> None:
    for i in range(10):
        log.record("a", "step", index=i)
    assert [e["index"] for e in log.read(limit=3)] == [7, 8, 9]
    assert log.read(limit=0) == []
    assert len(log.read(limit=100)) == 10


def test_filters_combine(log: AuditLog) -> None:
    log.record("a", "login")
    log.record("b", "login")
    log.record("a", "token.issue")
    log.record("a", "login")
    assert len(log.read(actor="a", action="login", limit=5)) == 2


# -- secrets -----------------------------------------------------------------------------
def test_secrets_redacted(log: AuditLog) -> None:
    jwt_like = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJlc2lnbmF0dXJl"
    entry = log.record("owner@stmary-hospital.org", "account.create", target="ada",
                       password="hunter2-correct-horse", token="tok-value-1",
                       secret="s3cr3t-value", key="k3y-value", authorization="Bearer abc-value",
                       admin_password="adm1n-value", api_key="ap1-value", Access_Token="acc-value",
                       nested={"password": "n3sted-value", "role": "data_scientist"},
                       note=f"presented Bearer {jwt_like}", role="data_scientist")
    for name in ("password", "token", "secret", "key", "authorization", "admin_password",
                 "api_key", "Access_Token"):
        assert entry[name] == REDACTED, name
    assert entry["nested"] == {"password": REDACTED, "role": "data_scientist"}
    assert entry["note"] == f"presented Bearer {REDACTED}"
    assert entry["role"] == "data_scientist"
    raw = log.path.read_text()
    for value in ("hunter2", "tok-value", "s3cr3t", "k3y-value", "abc-value", "adm1n", "ap1-value",
                  "acc-value", "n3sted", jwt_like):
        assert value not in raw, value
    assert log.read()[0] == entry


def test_long_values_are_bounded(log: AuditLog) -> None:
    entry = log.record("a", "x", reason="y" * 100_000)
    assert len(entry["reason"]) < 1100
    assert len(log.path.read_bytes()) < 2000


# -- file safety -------------------------------------------------------------------------
def test_file_is_0600(log: AuditLog) -> None:
    old_umask = os.umask(0)
    try:
        log.record("a", "x")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600


def test_loose_permissions_are_tightened(log: AuditLog) -> None:
    log.record("a", "x")
    os.chmod(log.path, 0o644)
    log.record("a", "y")
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600


def test_torn_last_line_tolerated(log: AuditLog) -> None:
    log.record("a", "before")
    with open(log.path, "ab") as handle:  # a writer killed in the middle of a line
        handle.write(b'{"time": "2026-11-21T10:00:00.000Z", "actor": "a", "act')
    assert [e["action"] for e in log.read()] == ["before"]
    log.record("a", "after")  # starts on a fresh line, not glued to the torn one
    assert [e["action"] for e in log.read()] == ["before", "after"]


def test_garbage_lines_skipped(log: AuditLog) -> None:
    log.path.write_bytes(b'not json\n[1, 2]\n\n{"time": "2026-11-21T10:00:00.000Z", '
                         b'"actor": "a", "action": "ok"}\n\xff\xfe\n')
    assert [e["action"] for e in log.read()] == ["ok"]


# -- concurrency -------------------------------------------------------------------------
LINES_PER_WRITER = 200


def _write_many(state_dir: str, writer: int) -> None:
    log = AuditLog(state_dir)
    for i in range(LINES_PER_WRITER):
        log.record(f"writer{writer}@example.org", "load.test", target=str(i), writer=writer,
                   index=i, padding="x" * 300)


def test_concurrent_writers_from_two_processes(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(str(tmp_path), w)) for w in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    log = AuditLog(tmp_path)
    lines = lines_of(log)
    assert len(lines) == 2 * LINES_PER_WRITER
    entries = [json.loads(line) for line in lines]  # every line is whole, valid JSON
    for writer in (1, 2):
        assert sorted(e["index"] for e in entries if e["writer"] == writer) == \
            list(range(LINES_PER_WRITER))


def test_concurrent_writers_from_threads(log: AuditLog) -> None:
    def write(n: int) -> None:
        for i in range(50):
            log.record(f"t{n}", "thread.test", index=i)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = log.read()
    assert len(entries) == 200 == len(lines_of(log))
    assert sorted((e["actor"], e["index"]) for e in entries) == \
        sorted((f"t{n}", i) for n in range(4) for i in range(50))


# -- parse_since -------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("2026-11-21", datetime(2026, 11, 21, tzinfo=timezone.utc)),
    ("2026-11-21T10:00", datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc)),
    ("2026-11-21 10:00:30", datetime(2026, 11, 21, 10, 0, 30, tzinfo=timezone.utc)),
    ("2026-11-21T10:00+02:00", datetime(2026, 11, 21, 8, 0, tzinfo=timezone.utc)),
    ("2026-11-21T10:00:00Z", datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc)),
    ("1h", NOW - timedelta(hours=1)),
    ("30m", NOW - timedelta(minutes=30)),
    ("2d", NOW - timedelta(days=2)),
    ("45s", NOW - timedelta(seconds=45)),
])
def test_parse_since(text: str, expected: datetime) -> None:
    parsed = parse_since(text, now=NOW)
    assert parsed == expected and parsed.utcoffset() == timedelta(0)


def test_parse_since_age_defaults_to_now() -> None:
    delta = datetime.now(timezone.utc) - parse_since("1h")
    assert timedelta(minutes=59) < delta < timedelta(minutes=61)


@pytest.mark.parametrize("text", ["", "yesterday", "90", "1y", "-1h", "2026-13-01",
                                  "2026-11-21T25:00", "1.5h"])
def test_parse_since_refuses(text: str) -> None:
    with pytest.raises(PneumoSyftError, match=r"^invalid since .*: use a date \(2026-11-21\)"):
        parse_since(text)
