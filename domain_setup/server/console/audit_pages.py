"""The audit page: the log newest first, filtered by actor, action, outcome and time,
a page at a time (the log is read from its end: `AuditLog.page`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request

from domain_setup.server.console.context import Console

PAGE_SIZE = 100
FILTERS = ("actor", "action", "outcome", "since", "until")


def register(router: Any, console: Console) -> None:
    """The audit route."""

    @router.get("/audit")
    async def audit_page(request: Request, page: int = 1) -> Any:
        session = console.user(request, "read_audit")
        filters = {k: request.query_params.get(k, "").strip()[:200] for k in FILTERS}
        page = max(1, min(page, 10_000))
        entries = await console.act(session, lambda admin: admin.audit_page(
            **{k: v or None for k, v in filters.items()}, offset=(page - 1) * PAGE_SIZE,
            limit=PAGE_SIZE + 1))
        kept = {k: v for k, v in filters.items() if v}
        return console.page(session, "audit.html", entries=entries[:PAGE_SIZE],
                            filters=filters, page=page,
                            newer=urlencode({**kept, "page": page - 1}) if page > 1 else "",
                            older=urlencode({**kept, "page": page + 1})
                            if len(entries) > PAGE_SIZE else "")
