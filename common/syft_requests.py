"""Look up one syft request by id without fetching every request on the domain.

``client.requests.get_all()`` pulls every request a user can see, and asking each
for its code pulls the code with its constants (model weights, sealed shares).
Polls and approvals that did that grew slower with every federated round. These
helpers fetch just the one request.

    request = get_request(client, "3f2a...")   # 32 hex digits
"""

from __future__ import annotations

import re
from typing import Any

from common.errors import DomainError

_FULL_ID = re.compile(r"^[0-9a-f]{32}$")


def get_request(client: Any, request_id: str) -> Any:
    """The request with this full id (32 hex digits), or a DomainError if not visible."""
    from common import syft_compat

    cleaned = (request_id or "").strip().lower().replace("-", "")
    if not _FULL_ID.match(cleaned):
        raise DomainError(f"invalid request id {request_id!r}: expected 32 hex digits")
    try:
        request = client.api.services.request.get_by_uid(uid=syft_compat.to_uid(cleaned))
    except Exception:  # syft raises its own NotFound / permission errors here
        request = None
    if request is None or not syft_compat.is_request(request):
        raise DomainError(f"request {cleaned} is not visible to this account")
    return request


def is_pending(request: Any) -> bool:
    """Is the request undecided? Read from the request as fetched (no decision in its
    history), without syft's ``status``, which re-fetches the request from the server:
    a pass over many requests then costs one call, not one per request."""
    return len(request.history) == 0


def request_status(request: Any) -> str:
    """'pending', 'approved' or 'rejected', read from the request as fetched: undecided
    with no history, approved when its last decision applied every change. syft's own
    ``status`` asks the server twice more (the code with its constants, and a
    ``migration._get_object`` a researcher may not call) on every poll."""
    if is_pending(request):
        return "pending"
    applied = request.current_change_state
    return ("approved" if len(applied) == len(request.changes) and all(applied.values())
            else "rejected")
