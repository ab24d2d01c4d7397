"""The ids of the requests nobody has decided yet, so that a review pass costs what is
pending, not every request ever made.

syft keeps requests in one table and can only tell a pending one by reading it; an
admin's pass that fetched them all grew with every request of the domain's life. The
server keeps this index instead: built from syft's store once at start (one scan, which
also corrects anything a crash lost), then kept as the wrapped ``request.submit``,
``Request.apply`` and ``Request.undo`` (`server/approval_guard.py`) add and remove ids.
Readers still check each request they fetch: the index says where to look, syft's
request says what it is.

    pending = PendingRequests.scan(worker)
    pending.add("3f2a…"); pending.ids()       # ["3f2a…"], oldest first
"""

from __future__ import annotations

import threading
from typing import Any

from common import syft_compat


class PendingRequests:
    """Undecided request ids, oldest first (thread-safe)."""

    def __init__(self, ids: list[str] | None = None):
        self._ids: dict[str, None] = dict.fromkeys(ids or ())
        self._lock = threading.Lock()

    @classmethod
    def scan(cls, worker: Any) -> "PendingRequests":
        """The index of the requests in syft's store without a decision in their history."""
        return cls([str(r.id.no_dash) for r in syft_compat.all_requests(worker)
                    if len(r.history) == 0])

    def add(self, request_id: str) -> None:
        with self._lock:
            self._ids[request_id] = None

    def discard(self, request_id: str) -> None:
        with self._lock:
            self._ids.pop(request_id, None)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._ids)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)
