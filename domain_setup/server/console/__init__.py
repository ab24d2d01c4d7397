"""The hospital admin's web console, served by the domain itself under ``/admin/``.

Same process, same port, same rules: a logged-in admin or data owner acts through an
`AdminClient` on a token of their own (`sessions.py`), so the console can do exactly
what the account may do on the API (`permissions.yaml`) and every action lands in the
same audit log. Server-rendered HTML (Jinja2, autoescaped), no JavaScript, a strict
Content-Security-Policy, an HttpOnly SameSite=Strict session cookie and a CSRF token on
every form (`security.py`).

    install_console(app, state, config, gate)   # in build_app, before the gate

Pages, in the order an admin lives them: requests, datasets, privacy, accounts, tokens,
federation, audit (one module each, or two where they belong together).
"""

from __future__ import annotations

from typing import Any


def install_console(app: Any, state: Any, config: Any, gate: Any) -> Any:
    """Mount the console's routes and static files under /admin on `app`; returns the
    `Console` (its sessions end when the app stops)."""
    from fastapi import APIRouter, Request
    from fastapi.responses import HTMLResponse, Response

    from domain_setup.server.console import (audit_pages, domain_pages, login_pages,
                                             people_pages, privacy_pages, request_pages)
    from domain_setup.server.console.context import Console, Denied, LoginNeeded
    from domain_setup.server.console.render import STATIC, pygments_css
    from domain_setup.server.console.security import ConsoleHeaders

    console = Console(state, config, gate)
    router = APIRouter()
    for pages in (login_pages, request_pages, domain_pages, privacy_pages, people_pages,
                  audit_pages):
        pages.register(router, console)

    stylesheet = (STATIC / "console.css").read_text() + "\n" + pygments_css()

    @router.get("/static/console.css")
    def css() -> Response:
        return Response(stylesheet, media_type="text/css")

    @router.get("/{anything:path}")
    def not_found(anything: str, request: Request) -> Any:
        console.user(request)
        raise Denied(404, "there is no such page in the console")

    app.include_router(router, prefix="/admin")

    async def denied(request: Request, exc: Denied) -> HTMLResponse:
        session = console.sessions.get(request.cookies.get(console.cookie))
        return console.page(session, "error.html", status=exc.status, message=exc.reason)

    async def login_needed(request: Request, _exc: LoginNeeded) -> Any:
        return console.to_login(request)

    app.add_exception_handler(Denied, denied)
    app.add_exception_handler(LoginNeeded, login_needed)
    app.add_middleware(ConsoleHeaders)
    return console
