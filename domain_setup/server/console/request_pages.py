"""The requests pages: pending first, one request with its verdict, release table, privacy
cost, round, highlighted code and its runs; approve, deny with a reason, override with a
reason. Every decision goes through the `Reviewer` the CLI uses, so the domain checks it
the same way (a custom or violating request needs an override and a reason)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from common import syft_compat
from common.errors import DomainError
from common.syft_requests import is_pending
from domain_setup.admin.review import normalise_request_id, summarise
from domain_setup.server.console import render
from domain_setup.server.console.context import Console, Denied

PAGE_SIZE = 100
BOUND_MEANING = {"public": "known before the run", "dp": "covered by the privacy charge",
                 "trusted": "released only where the admin does not require DP"}


def request_page_rows(admin: Any, page: int) -> tuple[list, int, int]:
    """(rows of page `page`, pending count, total): every code request ordered pending
    first then newest first, from one fetch of them all; only the page's rows are judged
    (a request's code is one more call each: 500 of them took 11 s), the pending ones with the domain's quote
    (their verdict is what the admin decides on)."""
    reviewer = admin.reviewer
    requests = list(reviewer.client.requests.get_all())  # resolving each one's code: per row
    requests.sort(key=lambda r: str(r.request_time), reverse=True)
    requests.sort(key=lambda r: not is_pending(r))  # stable: newest first within each
    shown = [r for r in requests[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
             if syft_compat.is_user_code(r.code)]  # syft's other kinds of request: left out
    names = reviewer._asset_names() if shown else {}
    rows = [reviewer._summarise(r, names) if is_pending(r) else summarise(r, reviewer.rules, names)
            for r in shown]
    return rows, sum(map(is_pending, requests)), len(requests)


def register(router: Any, console: Console) -> None:
    """The requests routes."""

    @router.get("/requests")
    async def requests_page(request: Request, page: int = 1) -> Any:
        session = console.user(request, "approve_requests")
        page = min(max(page, 1), 10_000)
        rows, pending, total = await console.act(
            session, lambda admin: request_page_rows(admin, page))
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
