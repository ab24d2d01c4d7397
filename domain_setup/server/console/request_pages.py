"""The requests pages: pending first, one request with its verdict, release table, privacy
cost, round, highlighted code and its runs; approve, deny with a reason, override with a
reason. Every decision goes through the `Reviewer` the CLI uses, so the domain checks it
the same way (a custom or violating request needs an override and a reason)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from common.errors import DomainError
from domain_setup.admin.review import normalise_request_id
from domain_setup.server.console import render
from domain_setup.server.console.context import Console, Denied

PAGE_SIZE = 100
BOUND_MEANING = {"public": "known before the run", "dp": "covered by the privacy charge",
                 "trusted": "released only where the admin does not require DP"}


def register(router: Any, console: Console) -> None:
    """The requests routes."""

    @router.get("/requests")
    async def requests_page(request: Request, page: int = 1) -> Any:
        session = console.user(request, "approve_requests")
        page = min(max(page, 1), 10_000)
        rows, pending, total = await console.act(
            session, lambda admin: admin.reviewer.page(page, PAGE_SIZE))
        return console.page(session, "requests.html", rows=rows, pending=pending, total=total,
                            page=page, pages=max(1, -(-total // PAGE_SIZE)))

    @router.get("/requests/{request_id}")
    async def request_page(request_id: str, request: Request) -> Any:
        session = console.user(request, "approve_requests")
        wanted = _checked(request_id)
        summary = await console.act(session, lambda admin: admin.show(wanted))
        runs = [e for e in console.gate.audit.page(target=summary.code_id, limit=50)] + \
            console.gate.audit.page(target=summary.id, limit=50)
        runs.sort(key=lambda e: str(e.get("time", "")))
        hidden = (render.hidden_characters(summary.code, keep="\n\t")
                  + render.hidden_characters(summary.reason))
        long_lines = [n for n, line in enumerate(summary.code.splitlines(), 1)
                      if len(line) > render.LONG_LINE]
        return console.page(session, "request.html", s=summary, runs=runs,
                            code=render.highlighted(summary.code), meaning=BOUND_MEANING,
                            hidden=hidden, long_lines=long_lines, long_line=render.LONG_LINE)

    @router.post("/requests/{request_id}/approve")
    async def approve(request_id: str, request: Request) -> Any:
        session = console.user(request, "approve_requests")
        fields = await console.form(request, session)
        wanted = _checked(request_id)
        override = fields.get("override") == "yes"
        reason = fields.get("reason", "").strip()
        return await console.act_then(
            session, lambda admin: admin.approve(wanted, override=override, reason=reason),
            f"request {wanted[:8]} approved" + (" (override)" if override else ""),
            f"/admin/requests/{wanted}")

    @router.post("/requests/{request_id}/deny")
    async def deny(request_id: str, request: Request) -> Any:
        session = console.user(request, "approve_requests")
        fields = await console.form(request, session)
        wanted = _checked(request_id)
        reason = fields.get("reason", "").strip()
        return await console.act_then(
            session, lambda admin: admin.deny(wanted, reason=reason),
            f"request {wanted[:8]} denied", f"/admin/requests/{wanted}")


def _checked(request_id: str) -> str:
    try:
        wanted = normalise_request_id(request_id)
    except DomainError as exc:
        raise Denied(404, str(exc)) from None
    if len(wanted) != 32:
        raise Denied(404, "a request id has 32 hex digits")
    return wanted
