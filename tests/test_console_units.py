"""The console's decisions without a browser or a domain: the login throttle, where a
login may send the browser next, the origin check, the cookie's name, who may record
what in the audit log, escaping in every renderer, and the audit log read newest first."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from domain_setup.server.audit import AuditLog
from domain_setup.server.console import render
from domain_setup.server.console.login_pages import safe_next
from domain_setup.server.console.security import cookie_name, same_origin_problem
from domain_setup.server.console.throttle import MAX_LOCK_SECONDS, LoginThrottle
from domain_setup.server.routes import permission_to_record

PAYLOAD = "</pre><script>alert(1)</script>\"><img src=x onerror=alert(2)>"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_locks_after_two_failures_and_doubles_each_time():
    clock = Clock()
    throttle = LoginThrottle(clock)
    assert [throttle.failed("eve@x.org") for _ in range(2)] == [0, 0]
    assert throttle.remaining("eve@x.org") == 0
    assert throttle.failed("eve@x.org") == 8
    assert throttle.remaining("eve@x.org") == 8 and throttle.remaining("bob@x.org") == 0
    clock.now += 8
    assert throttle.remaining("eve@x.org") == 0
    assert throttle.failed("eve@x.org") == 16
    for _ in range(20):
        last = throttle.failed("eve@x.org")
    assert last == MAX_LOCK_SECONDS
    throttle.succeeded("eve@x.org")
    assert throttle.failures("eve@x.org") == 0 and throttle.remaining("eve@x.org") == 0


def test_the_throttle_forgets_old_failures():
    clock = Clock()
    throttle = LoginThrottle(clock)
    throttle.failed("eve@x.org")
    throttle.failed("eve@x.org")
    clock.now += 3601
    assert throttle.failed("eve@x.org") == 0  # counted from one again


@pytest.mark.parametrize("asked, expected", [
    ("/admin/tokens", "/admin/tokens"),
    ("/admin/requests/abc", "/admin/requests/abc"),
    ("//evil.example/admin/", "/admin/requests"),
    ("https://evil.example/admin/x", "/admin/requests"),
    ("/admin/\\evil", "/admin/requests"),
    ("/admin/login", "/admin/requests"),
    ("/api/v2/api_call", "/admin/requests"),
    ("/admin/x\r\nSet-Cookie: a=b", "/admin/requests"),
    (None, "/admin/requests"),
])
def test_a_login_only_sends_the_browser_to_a_console_page(asked, expected):
    assert safe_next(asked) == expected


@pytest.mark.parametrize("headers, refused", [
    ({"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:8080"}, False),
    ({"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:9090"}, True),
    ({"host": "127.0.0.1:8080", "origin": "https://127.0.0.1:8080"}, True),
    ({"host": "127.0.0.1:8080", "origin": "null"}, True),
    ({"host": "127.0.0.1:8080", "referer": "http://127.0.0.1:8080/admin/x"}, False),
    ({"host": "127.0.0.1:8080", "referer": "http://evil.example/x"}, True),
    ({"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:8080",
      "sec-fetch-site": "same-site"}, True),
    ({"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:8080",
      "sec-fetch-site": "same-origin"}, False),
    ({"host": "127.0.0.1:8080"}, False),  # no browser: the CSRF token decides
])
def test_a_form_must_come_from_the_console_s_own_origin(headers, refused):
    assert (same_origin_problem(headers, "http") is not None) is refused


def test_the_cookie_is_host_only_over_tls_and_named_by_port():
    assert cookie_name(8443, True) == "__Host-pneumosyft-console-session-8443"
    assert cookie_name(8080, False) == "pneumosyft-console-session-8080"
    assert cookie_name(8080, False, "login") != cookie_name(8080, False)


def test_who_may_record_what_in_the_audit_log():
    assert permission_to_record("request.deny") == "approve_requests"
    assert permission_to_record("account.created") == "manage_accounts"
    assert permission_to_record("token.issue") == "read_audit"
    assert permission_to_record("requests") == "read_audit"


def test_pages_escape_what_they_show_in_text_and_attributes():
    html = render.page("error.html", message=PAYLOAD, session=None, flash=[("error", PAYLOAD)],
                       navigation=[], domain=PAYLOAD)
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "&#34;&gt;&lt;img" in html


def test_highlighted_code_is_escaped_by_pygments():
    html = str(render.highlighted(f"x = {PAYLOAD!r}\n# {PAYLOAD}\n"))
    assert "<script>" not in html and "<img" not in html and "&lt;script&gt;" in html
    assert 'class="linenos"' in html and "style=" not in html  # colours from the stylesheet


def test_hidden_characters_are_written_out():
    tricked = "if mode != \"count\u202e \u2066# never\u2069 \u2066\":\n\tpass\u200b"
    assert render.hidden_characters(tricked, keep="\n\t") == [
        "U+202E", "U+2066", "U+2069", "U+2066", "U+200B"]
    shown = render.visible(tricked, keep="\n\t")
    assert "⟪U+202E⟫" in shown and "\u202e" not in shown and "\n\t" in shown
    html = str(render.highlighted(tricked))
    assert "\u202e" not in html and "U+202E" in html


def test_one_password_check_at_a_time_per_account():
    throttle = LoginThrottle()
    with throttle.checking("eve@x.org") as first:
        with throttle.checking("eve@x.org") as second, throttle.checking("bob@x.org") as other:
            assert (first, second, other) == (True, False, True)
    with throttle.checking("eve@x.org") as again:
        assert again


def test_the_epsilon_plot_escapes_labels_and_steps_up():
    svg = str(render.epsilon_plot({PAYLOAD: [(100.0, 0.5), (200.0, 1.5)]}, now=300.0))
    assert "<script>" not in svg and "<img" not in svg
    assert svg.count("<polyline") == 1 and ">1.50<" in svg
    assert "No privacy releases" in str(render.epsilon_plot({}))


def test_a_thumbnail_is_a_png_of_the_mock_image():
    import numpy as np

    png = render.thumbnail(np.random.default_rng(0).random((1, 28, 28)))
    assert png.startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="2-D"):
        render.thumbnail(np.zeros((3, 4, 5)))


def test_the_audit_log_is_paged_newest_first_across_rotated_files(tmp_path):
    log = AuditLog(tmp_path, max_bytes=4096, keep=50)
    for n in range(300):
        log.record(f"user{n % 3}@x.org", "token.issue" if n % 2 else "request.approve",
                   target=f"t{n}", outcome="refused" if n % 5 == 0 else "ok")
    assert len(list(tmp_path.glob("audit.jsonl.*"))) > 3  # rotated
    first = log.page(limit=10)
    assert [e["target"] for e in first] == [f"t{n}" for n in range(299, 289, -1)]
    second = log.page(limit=10, offset=10)
    assert second[0]["target"] == "t289"
    mine = log.page(actor="USER1@x.org", action="token", outcome="ok", limit=500)
    assert mine and all(e["actor"] == "user1@x.org" and e["action"] == "token.issue"
                        and e["outcome"] == "ok" for e in mine)
    assert len(mine) == sum(1 for n in range(300) if n % 3 == 1 and n % 2 and n % 5)
    assert [e["target"] for e in log.page(target="t7")] == ["t7"]


def test_the_audit_page_filters_by_time(tmp_path):
    log = AuditLog(tmp_path)
    now = datetime.now(timezone.utc)
    lines = [{"time": (now - timedelta(hours=h)).isoformat(timespec="milliseconds"),
              "actor": "a@x.org", "action": "x", "target": f"h{h}", "outcome": "ok"}
             for h in (5, 4, 3, 2, 1)]
    (tmp_path / "audit.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines)
                                         + "torn {\n")
    kept = log.page(since=now - timedelta(hours=3, minutes=30),
                    until=now - timedelta(hours=1, minutes=30))
    assert [e["target"] for e in kept] == ["h2", "h3"]
