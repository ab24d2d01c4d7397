"""The sandbox queue: runs wait, in order of arrival, until their memory fits the budget.

Every sandbox is allowed its ``memory_mb`` (approval.yaml's ``sandbox:``); on a busy day
twenty of them at once would ask for more memory than the machine has and each would
crawl. A run therefore starts only while the memory limits of the runs already going
plus its own fit the domain's budget (``start --sandbox-memory-budget-mb``, by default
half the machine's memory) and fewer than ``max_running`` run (``start --max-concurrent-runs``,
by default the number of cores). The others wait, first come first served; at most
``max_waiting`` may wait (``start --max-queued-runs``), the next is refused at once, before
any private data is read. A run's wall-clock limit starts when it leaves the queue.

The queue lives in the server's memory only: a crash loses it, and recovery at the next
start marks the runs that were waiting as not run (`server/recovery.py`).

    queue = RunQueue(memory_budget_mb=8192, max_running=2, max_waiting=32)
    with queue.slot("run-id", memory_mb=4096, owner="ada@…"):
        ...                                  # the sandbox runs here
    queue.entries(owner="ada@…")             # [{"run": …, "state": "queued", "position": 1}]
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from common.errors import PneumoSyftError

DEFAULT_BUDGET_SHARE = 0.5  # of the machine's memory, when the admin sets no budget
DEFAULT_MAX_WAITING = 32


class QueueRefused(PneumoSyftError):
    """A run that may not wait in the queue (too big for the budget, or the queue is full)."""


@dataclass
class _Ticket:
    run: str
    owner: str
    memory_mb: int
    arrived: float = field(default_factory=time.monotonic)
    started: float | None = None


def machine_memory_mb() -> int:
    """The machine's memory in MB (MemTotal)."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise OSError("MemTotal missing from /proc/meminfo")


def default_memory_budget_mb() -> int:
    """The budget when the admin sets none: half the machine's memory."""
    return int(machine_memory_mb() * DEFAULT_BUDGET_SHARE)


def default_max_running() -> int:
    """The concurrency when the admin sets none: one run per core."""
    return max(1, os.cpu_count() or 1)


class RunQueue:
    """First come, first served admission of sandbox runs under a memory budget."""

    def __init__(self, *, memory_budget_mb: int, max_running: int,
                 max_waiting: int = DEFAULT_MAX_WAITING):
        if memory_budget_mb < 1 or max_running < 1 or max_waiting < 0:
            raise ValueError("the queue needs a positive budget and concurrency")
        self.memory_budget_mb = int(memory_budget_mb)
        self.max_running = int(max_running)
        self.max_waiting = int(max_waiting)
        self._changed = threading.Condition()
        self._waiting: list[_Ticket] = []
        self._running: list[_Ticket] = []

    @contextmanager
    def slot(self, run: str, *, memory_mb: int, owner: str) -> Iterator[float]:
        """Wait for this run's turn, hold its place while it runs; yields the seconds it
        waited. Raises QueueRefused at once when it can never fit or the queue is full."""
        if memory_mb > self.memory_budget_mb:
            raise QueueRefused(f"the run's memory limit ({memory_mb} MB) is above the domain's "
                               f"sandbox memory budget ({self.memory_budget_mb} MB)")
        ticket = _Ticket(run, owner, int(memory_mb))
        with self._changed:
            if len(self._waiting) >= self.max_waiting:
                raise QueueRefused(f"the domain's run queue is full ({len(self._waiting)} "
                                   f"waiting): submit again later")
            self._waiting.append(ticket)
            try:
                while not self._may_start(ticket):
                    self._changed.wait()
            except BaseException:
                self._waiting.remove(ticket)
                self._changed.notify_all()
                raise
            self._waiting.remove(ticket)
            ticket.started = time.monotonic()
            self._running.append(ticket)
        try:
            yield ticket.started - ticket.arrived
        finally:
            with self._changed:
                self._running.remove(ticket)
                self._changed.notify_all()

    def core_share(self, cap: int | None = None) -> int:
        """Torch threads for a run starting now: the machine's cores shared by the runs
        going (this one included), at least 1, at most `cap`. Two runs of two threads
        each on two cores take longer together than one after the other."""
        with self._changed:
            share = max(1, (os.cpu_count() or 1) // max(1, len(self._running)))
        return min(share, cap) if cap else share

    def _may_start(self, ticket: _Ticket) -> bool:
        in_use = sum(t.memory_mb for t in self._running)
        return (self._waiting[0] is ticket and len(self._running) < self.max_running
                and in_use + ticket.memory_mb <= self.memory_budget_mb)

    def entries(self, owner: str | None = None) -> list[dict]:
        """The runs running and waiting (``owner``'s only, when given), each with its
        state, its position among the waiting (1 = next) and its seconds so far."""
        now = time.monotonic()
        with self._changed:
            rows = [{"run": t.run, "owner": t.owner, "state": "running", "position": 0,
                     "seconds": round(now - (t.started or now), 1)} for t in self._running]
            rows += [{"run": t.run, "owner": t.owner, "state": "queued", "position": i + 1,
                      "seconds": round(now - t.arrived, 1)} for i, t in enumerate(self._waiting)]
        if owner is not None:
            rows = [row for row in rows if row["owner"] == owner]
        return rows

    def describe(self) -> dict:
        """The queue's settings and load, for /health and the admin."""
        with self._changed:
            return {"running": len(self._running), "queued": len(self._waiting),
                    "memory_in_use_mb": sum(t.memory_mb for t in self._running),
                    "memory_budget_mb": self.memory_budget_mb, "max_running": self.max_running,
                    "max_queued": self.max_waiting}
