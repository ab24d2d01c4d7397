"""Who is logged in to the console: server-side sessions behind an opaque cookie.

A login checks the account's password the way every client's login is checked: the
console issues the account a short-lived token with the domain's key and logs in to
syft through the gate with it, as the CLI would (`common.connection.connect_client`).
The session then acts through an `AdminClient` on that token and that syft client, so
the console has exactly the rights the account has on the API (`permissions.yaml`), and
every action lands in the same audit log under the account's email. Only admin and
data-owner accounts may log in; a data scientist's correct password gets nothing.

Sessions live in the server's memory only: logout, expiry or a restart ends them, and
their token is revoked with them, so a stolen cookie dies with its session.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from common import syft_compat
from common.errors import DomainError, TokenError
from domain_setup.admin.session import AdminSession
from domain_setup.policy.roles import role_below
from domain_setup.server.console.throttle import LoginThrottle
from domain_setup.tls_certificate import trust_own_domain

CONSOLE_ROLES = ("admin", "data_owner")
SESSION_SECONDS = 8 * 3600  # a working day, then log in again
IDLE_SECONDS = 30 * 60  # left open and unused: ended
MAX_SESSIONS = 200  # a flood of logins cannot fill the server's memory
MAX_CONCURRENT_CHECKS = 4


class LoginRefused(DomainError):
    """A login the console refuses: HTTP status and a one-line reason for the page."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class ConsoleSession(AdminSession):
    """An `AdminSession` for one logged-in account: its own token, issued at login and
    revoked at logout, and the syft client its password opened."""

    def __init__(self, state: Any, *, email: str, role: str, token: str, jti: str,
                 client: Any, authority: Any):
        super().__init__(state)
        self.email, self.role, self.jti = email, role, jti
        self._token, self._client, self._authority = token, client, authority
        self.id = secrets.token_urlsafe(32)
        self.csrf = secrets.token_urlsafe(32)
        self.started = self.seen = time.time()
        self.flash: list[tuple[str, str]] = []  # (kind, text) shown on the next page
        self.lock = threading.Lock()  # one action at a time per session

    @property
    def token(self) -> str:  # fixed for the session's life, never renewed
        return self._token

    def client(self) -> Any:
        return self._client

    def close(self) -> None:
        """Revoke the session's token: the cookie, the token and the client die together."""
        try:
            self._authority.revoke(self.jti, reason="console session ended")
        except Exception:  # already revoked (the admin revoked it on the tokens page)
            pass
        self._http.close()

    def expired(self, now: float) -> bool:
        return now - self.started > SESSION_SECONDS or now - self.seen > IDLE_SECONDS

    def csrf_ok(self, sent: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), (sent or "").encode())


@dataclass
class ConsoleSessions:
    """The live console sessions of one domain, and the login that opens them."""

    state: Any
    gate: Any
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    _sessions: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # password checks under way at once (each is a syft login over HTTP to this server)
    _checks: threading.Semaphore = field(
        default_factory=lambda: threading.Semaphore(MAX_CONCURRENT_CHECKS))
    _check_seconds: deque = field(default_factory=lambda: deque(maxlen=20))

    def login(self, email: str, password: str, *, client_address: str) -> ConsoleSession:
        """A new session for `email` if the password is right and the role may use the
        console; else LoginRefused (401 wrong, 403 role, 429 throttled), audited."""
        email = (email or "").strip().lower()[:254]
        audit = self.gate.audit
        # one password check at a time per account, and a few in all: a burst of guesses in
        # parallel cannot slip past the count of failures, nor swamp the server
        with self.throttle.checking(email) as admitted:
            if not admitted or not self._checks.acquire(blocking=False):
                audit.record(email or "?", "console.login", outcome="throttled",
                             address=client_address, reason="another login is being checked")
                raise LoginRefused(429, "another login is being checked: try again in a moment")
            wait = self.throttle.remaining(email)
            if wait:
                self._checks.release()
                audit.record(email or "?", "console.login", outcome="throttled",
                             address=client_address, wait_seconds=str(wait))
                raise LoginRefused(429, f"too many failed logins for this account: try again "
                                        f"in {wait} s")
            try:
                client, account, claims, token = self._check_password(email, password,
                                                                      client_address)
            finally:
                self._checks.release()
        if account.role not in CONSOLE_ROLES:
            self.gate.authority.revoke(claims["jti"], reason="console login refused")
            audit.record(account.email, "console.login", outcome="refused",
                         address=client_address, reason=f"role {account.role}")
            raise LoginRefused(403, "this account may not use the console: it is for the "
                                    "hospital's admins and data owners")
        self.throttle.succeeded(email)
        session = ConsoleSession(self.state, email=account.email, role=account.role,
                                 token=token, jti=claims["jti"], client=client,
                                 authority=self.gate.authority)
        with self._lock:
            self._drop_expired(time.time())
            if len(self._sessions) >= MAX_SESSIONS:
                session.close()
                raise LoginRefused(503, "too many console sessions are open; try again later")
            self._sessions[session.id] = session
        audit.record(account.email, "console.login", target=claims["jti"],
                     address=client_address)
        return session

    def _check_password(self, email: str, password: str,
                        client_address: str) -> tuple[Any, Any, dict, str]:
        """(syft client, account, token claims, token) when the password is right; else the
        failure is counted and LoginRefused raised. An unknown account costs as long as a
        known one's check (the answer's time does not tell which accounts exist)."""
        from common.connection import connect_client

        started = time.monotonic()
        account = self.gate.accounts.by_email(email) if email else None
        if account is None or not password:
            time.sleep(max(0.0, self._typical_check_seconds() - (time.monotonic() - started)))
            self._failed(email, client_address, "no such account" if account is None
                         else "empty password")
        token, claims = self.gate.authority.issue(account.email, account.role,
                                                  ttl_seconds=SESSION_SECONDS)
        config = self.state.load_config()
        trust_own_domain(config)  # over TLS: this process pins its own certificate
        try:
            client = connect_client(config.url, token=token,
                                    email=account.email, password=password)
            syft_compat.forget_api(client)  # registered only while it acts (Console.act)
        except Exception as exc:  # a wrong password, or the check itself failed: counted
            self.gate.authority.revoke(claims["jti"], reason="console login failed")
            self._failed(email, client_address, "wrong password" if isinstance(exc, DomainError)
                         else f"the check failed ({type(exc).__name__})")
        self._check_seconds.append(time.monotonic() - started)
        return client, account, claims, token

    def _typical_check_seconds(self) -> float:
        recent = sorted(self._check_seconds)
        return recent[len(recent) // 2] if recent else 0.8

    def _failed(self, email: str, client_address: str, why: str) -> None:
        wait = self.throttle.failed(email)
        self.gate.audit.record(email or "?", "console.login", outcome="refused",
                               address=client_address, reason=why,
                               failures=str(self.throttle.failures(email)),
                               **({"locked_seconds": str(wait)} if wait else {}))
        raise LoginRefused(401, "wrong email or password")

    def get(self, session_id: str | None) -> ConsoleSession | None:
        """The live session of a cookie value (its last use now), or None."""
        if not session_id:
            return None
        now = time.time()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if session.expired(now) or not self._still_allowed(session):
                del self._sessions[session_id]
                session.close()
                return None
            session.seen = now
            return session

    def _still_allowed(self, session: ConsoleSession) -> bool:
        """The account still exists, may still use the console, and the session's token
        was not revoked (on the tokens page, say); a lowered role lowers the session's."""
        account = self.gate.accounts.by_email(session.email)
        if account is None or account.role not in CONSOLE_ROLES:
            return False
        if role_below(account.role, session.role):
            session.role = account.role
        try:
            self.gate.authority.verify(session.token)
        except TokenError:
            return False
        return True

    def end(self, session: ConsoleSession) -> None:
        """Log out: the session is gone server-side and its token revoked."""
        with self._lock:
            self._sessions.pop(session.id, None)
        session.close()
        self.gate.audit.record(session.email, "console.logout", target=session.jti)

    def _drop_expired(self, now: float) -> None:
        for session_id, session in list(self._sessions.items()):
            if session.expired(now):
                del self._sessions[session_id]
                session.close()

    def close_all(self) -> None:
        """At shutdown: every session ends and its token is revoked."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()
