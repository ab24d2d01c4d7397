"""The web console in a real browser (Debian's Chromium, driven by Playwright) against the
session's live hospital domain: an admin approves a vetted request and the researcher's
run succeeds, denies one with a reason the researcher reads, overrides custom code with a
reason found in the audit page, issues and revokes a token, grants budget; a data owner
cannot reach the accounts page, a data scientist cannot log in, wrong passwords are slowed
down and audited, a stolen cookie dies at logout; researcher-written markup is shown as
text and runs nothing; a form without the CSRF token or from another origin is refused;
every page carries the CSP."""

from __future__ import annotations

import http.server
import importlib.util
import re
import threading

import pytest
import requests

from conftest import ADMIN, DATA_OWNER, RESEARCHER
from console_browser import Browser, screenshot
from common.errors import DomainError
from scientist import TrainingPlan
from scientist.plans import train_xray_plan
from scientist.privacy import evaluate_private_xray_plan, private_evaluation
from scientist.submission import run_approved, split_assets, submit_plan, wait_for_approval

pytestmark = pytest.mark.domain

SCRIPT_TAG = "<script>window.__pwned = 1; alert('script tag')</script>"
IMG_TAG = '"><img src=x onerror="window.__pwned = 2; alert(\'img\')">'
JS_LINK = "<a href=\"javascript:alert('link')\">click me</a>"


@pytest.fixture(scope="module")
def browser(hospital):
    chromium = Browser(hospital.url)
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def passwords(hospital):
    from domain_setup.admin.accounts import account_password

    return {ADMIN: hospital.state.admin_password(),
            DATA_OWNER: account_password(hospital.state, DATA_OWNER),
            RESEARCHER: account_password(hospital.state, RESEARCHER)}


@pytest.fixture(scope="module")
def admin_page(browser, passwords):
    page = browser.login(ADMIN, passwords[ADMIN])
    yield page
    page.context.close()


def _evaluation(ada, reason: str):
    from common.models import build_model

    weights = {k: v.detach().numpy() for k, v in build_model("small_cnn", image_size=28)
               .state_dict().items()}
    return submit_plan(ada, evaluate_private_xray_plan, inputs=split_assets(ada, "xray", "test"),
                       constants={"weights": weights, "config": TrainingPlan(epochs=1).config(),
                                  "privacy": private_evaluation(1.0)}, reason=reason)


def _custom(ada, tmp_path, source: str, reason: str):
    """Submit custom code from a module file (syft reads a function's source from it)."""
    path = tmp_path / "custom_plan.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("custom_plan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return submit_plan(ada, module.count_images, inputs=split_assets(ada, "xray", "train"),
                       constants={}, reason=reason)


def _flash(page) -> str:
    return page.locator(".flash").first.inner_text()


def test_approve_a_vetted_request_and_the_researcher_run_succeeds(admin_page, ada, tmp_path):
    submission = _evaluation(ada, "held-out DP evaluation of the initial model")
    page = admin_page
    page.goto(f"{page.url.split('/admin')[0]}/admin/requests")
    row = page.locator("#requests tr", has_text=submission.func_name)
    assert "pending" in row.inner_text() and "vetted" in row.inner_text()
    screenshot(page, "requests", tmp_path)
    row.locator("a").click()
    assert page.locator("#verdict").inner_text().startswith("vetted plan")
    releases = page.locator("#release-table").inner_text()
    assert "metrics" in releases and "dp" in releases  # every value with what bounds it
    assert "ε 1" in page.locator("#privacy-cost").inner_text()
    assert page.locator("#reason").inner_text() == "held-out DP evaluation of the initial model"
    code_lines = len(page.locator("#code").inner_text().splitlines())
    assert page.locator("#code .linenos").count() == code_lines  # a number on every line
    screenshot(page, "request", tmp_path)
    page.click("#approve-form button[type=submit]")
    assert "approved" in _flash(page)
    wait_for_approval(ada, submission, timeout=60, progress=False)
    metrics = run_approved(ada, submission)["metrics"]
    assert 0.0 <= metrics["auc"] <= 1.0 and metrics["n_samples"] > 0  # a noisy count
    page.reload()
    assert "execution" in page.locator("#runs").inner_text()  # the run, as the audit saw it
    page.goto(page.url.split("/admin")[0] + "/admin/privacy")
    assert page.locator("#epsilon-plot svg polyline").count() >= 1
    assert RESEARCHER in page.locator("#releases").inner_text()
    screenshot(page, "privacy", tmp_path)


def test_deny_with_a_reason_the_researcher_reads(admin_page, ada):
    train = split_assets(ada, "xray", "train")
    submission = submit_plan(ada, train_xray_plan, inputs=train,
                             constants={"config": TrainingPlan(epochs=1).config(),
                                        "initial_weights": {}}, reason="one more epoch")
    admin_page.goto(f"{admin_page.url.split('/admin')[0]}/admin/requests/{submission.request_id}")
    admin_page.fill("#deny-form input[name=reason]", "use the DP training plan instead")
    admin_page.click("#deny-form button[type=submit]")
    assert "denied" in _flash(admin_page)
    with pytest.raises(DomainError, match="use the DP training plan instead"):
        wait_for_approval(ada, submission, timeout=30, progress=False)


def test_override_custom_code_with_a_reason_found_in_the_audit_page(admin_page, ada, tmp_path):
    submission = _custom(ada, tmp_path, "def count_images(images, labels):\n"
                                        "    return {'n': int(images.shape[0])}\n",
                         reason="how many training images")
    base = admin_page.url.split("/admin")[0]
    admin_page.goto(f"{base}/admin/requests/{submission.request_id}")
    assert "custom code" in admin_page.locator("#verdict").inner_text()
    admin_page.click("#approve-form button[type=submit]")  # the browser wants the checkbox
    assert admin_page.locator(".flash").count() == 0
    admin_page.check("#approve-form input[name=override]")
    admin_page.fill("#approve-form input[name=reason]", "read it: counts images only")
    admin_page.click("#approve-form button[type=submit]")
    assert "approved (override)" in _flash(admin_page)
    wait_for_approval(ada, submission, timeout=60, progress=False)
    assert run_approved(ada, submission) == {"n": 320}
    admin_page.goto(f"{base}/admin/audit?action=request.override")
    row = admin_page.locator("#audit tbody tr").first.inner_text()
    assert ADMIN in row and "read it: counts images only" in row
    assert submission.request_id in row


def test_issue_and_revoke_a_token(admin_page, hospital):
    base = admin_page.url.split("/admin")[0]
    admin_page.goto(f"{base}/admin/tokens")
    admin_page.fill("#issue-token input[name=email]", RESEARCHER)
    admin_page.fill("#issue-token input[name=ttl]", "1h")
    admin_page.click("#issue-token button[type=submit]")
    token = admin_page.locator("#secret").inner_text().strip()
    jti = re.search(r"id ([0-9a-f-]+)\)", admin_page.locator("main p").first.inner_text()).group(1)

    def ask() -> int:
        return requests.get(f"{base}/pneumosyft/privacy/me", timeout=30,
                            headers={"Authorization": f"Bearer {token}"}).status_code

    assert ask() == 200
    admin_page.goto(f"{base}/admin/tokens")
    row = admin_page.locator("#tokens tr", has_text=jti)
    row.locator("input[name=reason]").fill("handed to the wrong person")
    row.locator("button").click()
    assert "revoked" in _flash(admin_page)
    assert ask() == 401
    assert "handed to the wrong person" in admin_page.locator("#tokens tr", has_text=jti).inner_text()


def test_grant_budget(admin_page):
    base = admin_page.url.split("/admin")[0]
    admin_page.goto(f"{base}/admin/privacy")
    admin_page.fill("#grant-form input[name=email]", RESEARCHER)
    admin_page.fill("#grant-form input[name=dataset]", "xray")
    admin_page.fill("#grant-form input[name=epsilon]", "0.5")
    admin_page.fill("#grant-form input[name=reason]", "second study phase")
    admin_page.click("#grant-form button[type=submit]")
    assert "granted ε 0.5" in _flash(admin_page)
    row = admin_page.locator("#budgets tr", has_text=RESEARCHER).filter(has_text="xray").first
    granted = float(row.locator("td").nth(5).inner_text())
    assert granted >= 0.5
    admin_page.goto(f"{base}/admin/audit?action=privacy.grant")
    assert "second study phase" in admin_page.locator("#audit tbody tr").first.inner_text()


def test_a_data_owner_may_approve_but_not_reach_accounts(browser, passwords):
    page = browser.login(DATA_OWNER, passwords[DATA_OWNER])
    try:
        nav = page.locator("header nav").inner_text()
        assert "Requests" in nav and "Accounts" not in nav and "Audit" not in nav
        response = page.goto(f"{browser.url}/admin/accounts")
        assert response.status == 403
        assert "may not manage accounts" in page.locator("#error").inner_text()
    finally:
        page.context.close()


def test_a_data_scientist_cannot_log_in(browser, passwords):
    page = browser.login(RESEARCHER, passwords[RESEARCHER])
    try:
        assert "may not use the console" in page.locator("#login-error").inner_text()
        assert not [c for c in page.context.cookies() if "session" in c["name"]]
        page.goto(f"{browser.url}/admin/requests")
        assert page.url.startswith(f"{browser.url}/admin/login")
    finally:
        page.context.close()


def test_wrong_passwords_are_slowed_down_and_audited(browser, hospital):
    from domain_setup.admin import AdminClient

    email, password = "steward@stmary-hospital.org", "a-long-enough-steward-password"
    AdminClient(hospital.state).create_user(email, name="Data Steward", role="data_owner",
                                            password=password)
    page = browser.page()
    try:
        answers = [browser.login(email, f"wrong-guess-{n}", page=page)
                   .locator("#login-error").inner_text() for n in range(5)]
        assert answers[:2] == ["wrong email or password"] * 2
        assert all("too many failed logins" in a for a in answers[3:])
        # the right password is refused too while the account is locked
        browser.login(email, password, page=page)
        assert "too many failed logins" in page.locator("#login-error").inner_text()
    finally:
        page.context.close()
    entries = AdminClient(hospital.state).audit(actor=email, action="console.login")
    outcomes = [e["outcome"] for e in entries]
    assert outcomes.count("refused") == 3 and outcomes.count("throttled") == 3
    assert [e["reason"] for e in entries if e["outcome"] == "refused"] == ["wrong password"] * 3


def test_a_stolen_session_cookie_stops_working_after_logout(browser, passwords):
    owner = browser.login(ADMIN, passwords[ADMIN])
    thief = browser.page()
    try:
        cookie = next(c for c in owner.context.cookies() if "session" in c["name"])
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        thief.context.add_cookies([cookie])
        assert thief.goto(f"{browser.url}/admin/tokens").status == 200
        owner.click("header .logout button")
        assert owner.url.startswith(f"{browser.url}/admin/login")
        thief.goto(f"{browser.url}/admin/tokens")
        assert thief.url.startswith(f"{browser.url}/admin/login")
        # with the cookie sent by hand too: no session, no page
        stolen = requests.get(f"{browser.url}/admin/tokens", allow_redirects=False, timeout=30,
                              cookies={cookie["name"]: cookie["value"]})
        assert stolen.status_code == 303 and "/admin/login" in stolen.headers["location"]
    finally:
        owner.context.close()
        thief.context.close()


def test_researcher_markup_is_shown_as_text_and_runs_nothing(browser, admin_page, ada, tmp_path):
    source = ("def count_images(images, labels):\n"
              f"    # {SCRIPT_TAG}\n"
              f"    note = {IMG_TAG!r}\n"
              f"    link = {JS_LINK!r}\n"
              "    return {'n': int(images.shape[0])}\n")
    reason = f"{SCRIPT_TAG} {IMG_TAG} {JS_LINK}"
    submission = _custom(ada, tmp_path, source, reason=reason)
    page = browser.page()
    try:
        page.context.add_cookies(admin_page.context.cookies())
        for path in ("/admin/requests", f"/admin/requests/{submission.request_id}",
                     "/admin/audit", f"/admin/audit?actor={RESEARCHER}"):
            page.goto(browser.url + path)
            assert page.evaluate("window.__pwned") is None, path
            assert page.locator("img[src=x], a[href^=javascript], main script").count() == 0
        page.goto(f"{browser.url}/admin/requests/{submission.request_id}")
        assert page.locator("#reason").inner_text() == reason  # shown, as text
        code = page.locator("#code").inner_text()
        assert SCRIPT_TAG in code and "onerror=" in code and "javascript:alert" in code
        # the watch is live: a script the page itself tried to run would be refused and seen
        page.evaluate("""() => { const s = document.createElement('script');
                                 s.textContent = 'window.__pwned = 3'; document.body.append(s); }""")
        page.wait_for_function("window.__violations.length > 0")
        assert page.evaluate("window.__pwned") is None
        assert all(v.startswith("script-src") for v in page.evaluate("window.__violations"))
        assert browser.dialogs[id(page)] == []
    finally:
        page.context.close()


def test_code_that_reads_differently_from_what_it_is_is_written_out(admin_page, ada, tmp_path):
    """A right-to-left override and isolates make a live branch look like a comment (an
    attack that got private pixels approved); a statement after 300 spaces hid off-screen."""
    trick = "count\u202e \u2066# never true: counting only\u2069 \u2066"
    source = ("def count_images(images, labels, mode='leak'):\n"
              f"    if mode != \"{trick}\":\n"
              "        return {'n': int(images.shape[0])}\n"
              "    result = {'n': 0}" + " " * 300 + "; result['px'] = 1\n"
              "    return result\n")
    submission = _custom(ada, tmp_path, source, reason="count images only\u202e (vetted by DPO)")
    admin_page.goto(f"{admin_page.url.split('/admin')[0]}/admin/requests/{submission.request_id}")
    warning = admin_page.locator("#hidden-warning").inner_text()
    assert "U+202E" in warning and "U+2066" in warning
    code = admin_page.locator("#code").inner_text()
    assert "⟪U+202E⟫" in code and "\u202e" not in code
    assert "⟪U+202E⟫" in admin_page.locator("#reason").inner_text()
    assert "4" in admin_page.locator("#long-lines").inner_text()
    box = admin_page.locator("#code").bounding_box()  # wrapped: nothing scrolls out of sight
    assert admin_page.locator("#code pre").evaluate("e => e.scrollWidth <= e.clientWidth + 1")
    assert box["width"] <= 1280


def test_a_burst_of_parallel_guesses_is_checked_one_at_a_time(browser, hospital):
    from concurrent.futures import ThreadPoolExecutor

    from domain_setup.admin import AdminClient

    email = "burst@stmary-hospital.org"
    AdminClient(hospital.state).create_user(email, name="Burst Target", role="data_owner",
                                            password="the-burst-target-password")

    def guess(n: int) -> int:
        http = requests.Session()
        form = http.get(f"{browser.url}/admin/login", timeout=60).text
        token = re.search(r'name="login_token" value="([^"]+)"', form).group(1)
        return http.post(f"{browser.url}/admin/login", headers={"Origin": browser.url},
                         timeout=120, data={"login_token": token, "email": email,
                                            "password": f"guess-{n}"}).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(guess, range(12)))
    assert set(statuses) <= {401, 429} and 429 in statuses
    entries = AdminClient(hospital.state).audit(actor=email, action="console.login")
    checked = [e for e in entries if e.get("reason") == "wrong password"]
    assert 1 <= len(checked) <= 3  # the rest were refused unchecked
    assert len(entries) == 12


def test_a_huge_form_is_refused_before_it_is_read(browser):
    big = {"email": "x@y.org", "password": "p" * (1 << 20)}
    declared = requests.post(f"{browser.url}/admin/login", data=big, timeout=60,
                             headers={"Origin": browser.url})
    assert declared.status_code == 413

    def chunks():
        for _ in range(64):
            yield b"a" * 65536

    streamed = requests.post(f"{browser.url}/admin/login", data=chunks(), timeout=60,
                             headers={"Origin": browser.url})
    assert streamed.status_code == 413


def test_forms_without_the_csrf_token_or_from_another_origin_are_refused(
        browser, admin_page, ada, hospital):
    train = split_assets(ada, "xray", "train")
    submission = submit_plan(ada, train_xray_plan, inputs=train,
                             constants={"config": TrainingPlan(epochs=1).config(),
                                        "initial_weights": {}}, reason="keep me pending")
    cookies = {c["name"]: c["value"] for c in admin_page.context.cookies()}
    deny = f"{browser.url}/admin/requests/{submission.request_id}/deny"
    admin_page.goto(f"{browser.url}/admin/requests")
    csrf = admin_page.locator("header input[name=csrf]").get_attribute("value")
    without = requests.post(deny, data={"reason": "forged"}, cookies=cookies, timeout=30,
                            headers={"Origin": browser.url})
    assert without.status_code == 403 and "CSRF" in without.text
    elsewhere = requests.post(deny, data={"reason": "forged", "csrf": csrf}, cookies=cookies,
                              timeout=30, headers={"Origin": "http://evil.example"})
    assert elsewhere.status_code == 403 and "another origin" in elsewhere.text

    # a real cross-origin form in the admin's browser: another port is another origin (and
    # the same site, so SameSite lets the cookie through: the origin check must stop it)
    attack = (f'<form id=f method=post action="{deny}"><input name=reason value=forged>'
              f'<input name=csrf value="{csrf}"></form><script>f.submit()</script>')
    server = _serve_once(attack)
    try:
        page = admin_page.context.new_page()
        page.goto(f"http://127.0.0.1:{server.server_port}/")
        page.wait_for_url(re.compile(r".*/deny$"))
        assert "another origin" in page.locator("#error").inner_text()
        page.close()
    finally:
        server.shutdown()
    assert wait_pending(ada, submission)
    from domain_setup.admin import AdminClient

    refused = AdminClient(hospital.state).audit(action="console.form")
    assert sum("another origin" in e.get("reason", "") for e in refused) >= 2


def wait_pending(ada, submission) -> bool:
    from scientist.submission import request_status

    return request_status(ada, submission) == ("pending", "")


def _serve_once(html: str) -> http.server.HTTPServer:
    class Attack(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Attack)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_every_console_page_carries_the_security_headers(browser, admin_page):
    cookies = {c["name"]: c["value"] for c in admin_page.context.cookies()}
    paths = ["/admin/login", "/admin/", "/admin/requests", "/admin/datasets", "/admin/privacy",
             "/admin/accounts", "/admin/tokens", "/admin/federation", "/admin/audit",
             "/admin/no-such-page", "/admin/requests/not-an-id", "/admin/static/console.css",
             "/admin/datasets/xray/mock/0.png"]
    for path in paths:
        for jar in (cookies, {}):
            response = requests.get(browser.url + path, cookies=jar, timeout=60,
                                    allow_redirects=False)
            csp = response.headers.get("content-security-policy", "")
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
            assert response.headers.get("x-frame-options") == "DENY", path
            assert "script-src" not in csp and "unsafe-inline" not in csp, path
    image = requests.get(browser.url + "/admin/datasets/xray/mock/0.png", cookies=cookies,
                         timeout=60)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
