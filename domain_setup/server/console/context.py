"""`Console`: what every console page needs: who is logged in, what their role may do,
the checked form of a POST, and the `AdminClient` that acts for them.

Pages raise `Denied` (rendered as an error page with its status) or `LoginNeeded`
(a redirect to the login page); `install_console` renders both.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import parse_qs, quote

import anyio.to_thread
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from common import syft_compat
from common.errors import DomainError
from domain_setup.server.console import render
from domain_setup.server.console.security import (MAX_FORM_BYTES, cookie_name,
                                                   same_origin_problem)
from domain_setup.server.console.sessions import ConsoleSession, ConsoleSessions

# the pages of the console in the order an admin lives them: (path, title, action needed)
NAVIGATION = (("requests", "Requests", "approve_requests"),
              ("datasets", "Datasets", "list_datasets"),
              ("privacy", "Privacy", "approve_requests"),
              ("accounts", "Accounts", "manage_accounts"),
              ("tokens", "Tokens", "issue_tokens"),
              ("federation", "Federation", "change_settings"),
              ("audit", "Audit", "read_audit"))


class Denied(Exception):
    """A console request refused: HTTP status and the one line shown."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class LoginNeeded(Exception):
    """No live session: the browser goes to the login page."""


class Console:
    """The console of one domain (its state, config and gate)."""

    def __init__(self, state: Any, config: Any, gate: Any):
        from domain_setup.tls_certificate import TLS_KEY

        self.state, self.config, self.gate = state, config, gate
        self.tls = bool(config.extra.get(TLS_KEY))
        self.sessions = ConsoleSessions(state, gate)
        self.cookie = cookie_name(config.port, self.tls)
        self.login_cookie = cookie_name(config.port, self.tls, "login")

    # -- who ---------------------------------------------------------------------------
    def user(self, request: Request, action: str | None = None) -> ConsoleSession:
        """The logged-in session (LoginNeeded without one); Denied (403, audited) when
        its role may not `action`."""
        session = self.sessions.get(request.cookies.get(self.cookie))
        if session is None:
            raise LoginNeeded()
        if action is not None and not self.may(session, action):
            self.gate.audit.record(session.email, "console.page", target=request.url.path,
                                   outcome="refused", reason=f"role {session.role}")
            raise Denied(403, f"your role ({session.role}) may not {action.replace('_', ' ')}")
        return session

    def may(self, session: ConsoleSession, action: str) -> bool:
        return self.gate.permissions.role_may(session.role, action)

    async def form(self, request: Request, session: ConsoleSession | None) -> dict[str, str]:
        """The fields of a POSTed form, after the origin and CSRF checks (Denied 403)."""
        problem = same_origin_problem(request.headers, request.url.scheme)
        if problem:
            self._refused(session, request, problem)
        body = await _bounded_body(request)
        try:
            fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True,
                                                   max_num_fields=50).items()}
        except (UnicodeDecodeError, ValueError):
            raise Denied(400, "the form could not be read") from None
        if session is not None and not session.csrf_ok(fields.get("csrf", "")):
            self._refused(session, request, "the form's CSRF token is missing or wrong")
        return fields

    def _refused(self, session: ConsoleSession | None, request: Request, reason: str) -> None:
        self.gate.audit.record(session.email if session else "?", "console.form",
                               target=request.url.path, outcome="refused", reason=reason)
        raise Denied(403, reason)

    # -- acting ------------------------------------------------------------------------
    def admin(self, session: ConsoleSession) -> Any:
        """The `AdminClient` acting as the session's account, on the rules in force."""
        from domain_setup.admin import AdminClient

        return AdminClient(self.state, session=session,
                           approval_rules=self.gate.policies.current.approval)

    async def act(self, session: ConsoleSession, work: Callable[[Any], Any]) -> Any:
        """`work(admin_client)` in a worker thread, one console action at a time (syft
        resolves links through one API per account and process: `syft_compat.acting_as`);
        a DomainError is shown as the page's error (Denied 400)."""
        def run() -> Any:
            with session.lock, syft_compat.acting_as(session.client()):
                return work(self.admin(session))
        try:
            return await anyio.to_thread.run_sync(run)
        except DomainError as exc:
            raise Denied(400, str(exc)) from None

    async def act_then(self, session: ConsoleSession, work: Callable[[Any], Any],
                       done: str, back: str) -> RedirectResponse:
        """`act`, then back to `back` with `done` (or the error) shown there."""
        try:
            await self.act(session, work)
            session.flash.append(("ok", done))
        except Denied as refusal:
            session.flash.append(("error", refusal.reason))
        return self.redirect(back)

    # -- answering ---------------------------------------------------------------------
    def page(self, session: ConsoleSession | None, template: str, *, status: int = 200,
             **values: Any) -> HTMLResponse:
        """A page of the console with its navigation (what the role may reach)."""
        flash, navigation = [], []
        if session is not None:
            flash, session.flash = session.flash, []
            navigation = [(path, title) for path, title, action in NAVIGATION
                          if self.may(session, action)]
        html = render.page(template, session=session, flash=flash, navigation=navigation,
                           domain=self.config.name, **values)
        return HTMLResponse(html, status_code=status)

    @staticmethod
    def redirect(path: str) -> RedirectResponse:
        return RedirectResponse(path, status_code=303)

    def to_login(self, request: Request) -> RedirectResponse:
        return self.redirect("/admin/login?next=" + quote(request.url.path, safe="/"))


async def _bounded_body(request: Request) -> bytes:
    """The request's body, read no further than `MAX_FORM_BYTES` (Denied 413 beyond)."""
    too_large = Denied(413, f"the form is larger than {MAX_FORM_BYTES // 1024} KB")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise too_large
    return bytes(body)

