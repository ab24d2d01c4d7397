"""Where a researcher's runs stand in the sandbox queue.

    GET /pneumosyft/runs    the caller's runs, running or queued with their position
                            (an account that may approve requests sees every run), and
                            the queue's load and limits

A run's state here lives only while the server does; the approval ledger keeps what
each approval's run came to (`server/approval_ledger.py`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from domain_setup.server.routes import route_caller
from domain_setup.server.run_queue import RunQueue


def make_run_router(gate: Any, queue: RunQueue) -> APIRouter:
    """The route of the module docstring."""
    router = APIRouter()

    @router.get("")
    def runs(request: Request) -> Any:
        account = route_caller(gate, request, None, "see runs")
        sees_all = gate.permissions.role_may(account.role, "approve_requests")
        return {"runs": queue.entries(owner=None if sees_all else account.email),
                "queue": queue.describe()}

    return router
