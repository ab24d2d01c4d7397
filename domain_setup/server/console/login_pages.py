"""Log in and log out of the console.

The login form carries a token that must match a cookie set with the form (a login
from another site's form is refused), and every POST must come from the console's own
origin. A wrong password is audited and slows the account's next logins down
(`throttle.py`); a data scientist's correct password gets nothing.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

import anyio.to_thread
from fastapi import Request

from domain_setup.server.console.context import Console, Denied
from domain_setup.server.console.security import set_cookie
from domain_setup.server.console.sessions import SESSION_SECONDS, LoginRefused

LOGIN_FORM_SECONDS = 900


def safe_next(path: str | None) -> str:
    """Where to go after the login: a console page, never another site."""
    if path and path.startswith("/admin/") and not path.startswith("//") \
            and "\\" not in path and path.isprintable() and "/login" not in path:
        return path
    return "/admin/requests"


def register(router: Any, console: Console) -> None:
    """The login and logout routes."""

    def login_form(request: Request, *, message: str = "", status: int = 200,
                   email: str = "") -> Any:
        token = secrets.token_urlsafe(32)
        response = console.page(None, "login.html", status=status, login_token=token,
                                message=message, email=email,
                                next=safe_next(request.query_params.get("next")))
        set_cookie(response, console.login_cookie, token, tls=console.tls,
                   max_age=LOGIN_FORM_SECONDS)
        return response

    @router.get("/")
    def home() -> Any:
        return console.redirect("/admin/requests")

    @router.get("/login")
    def login_page(request: Request) -> Any:
        return login_form(request)

    @router.post("/login")
    async def login(request: Request) -> Any:
        fields = await console.form(request, None)
        expected = request.cookies.get(console.login_cookie, "")
        if not expected or not hmac.compare_digest(expected.encode(),
                                                   fields.get("login_token", "").encode()):
            raise Denied(403, "the login form expired or came from elsewhere: reload the page")
        email = fields.get("email", "")
        address = request.client.host if request.client else "?"
        try:
            session = await anyio.to_thread.run_sync(
                lambda: console.sessions.login(email, fields.get("password", ""),
                                               client_address=address))
        except LoginRefused as refusal:
            return login_form(request, message=str(refusal), status=refusal.status,
                              email=email[:254])
        response = console.redirect(safe_next(fields.get("next")))
        set_cookie(response, console.cookie, session.id, tls=console.tls,
                   max_age=SESSION_SECONDS)
        response.delete_cookie(console.login_cookie, path="/", secure=console.tls,
                               httponly=True, samesite="strict")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Any:
        session = console.user(request)
        await console.form(request, session)
        await anyio.to_thread.run_sync(lambda: console.sessions.end(session))
        response = console.redirect("/admin/login")
        response.delete_cookie(console.cookie, path="/", secure=console.tls, httponly=True,
                               samesite="strict")
        return response
