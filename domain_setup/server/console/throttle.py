"""Failed console logins slow the next ones down, per account.

After `FREE_FAILURES` wrong passwords in a row an account is locked for a time that
doubles with each further failure (8 s, 16 s, 32 s, ... at most 15 minutes); a login
while locked is refused without looking at the password, so guessing costs time
whatever the guesser sends. A success clears the count; failures older than
`FORGET_SECONDS` are forgotten. Keyed by the email asked for, known or not, so that
the answer does not tell which accounts exist.

    throttle = LoginThrottle()
    throttle.failed("eve@x.org")       # 0: not locked yet
    throttle.remaining("eve@x.org")    # seconds left of a lock (0: may try)
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import Callable, Iterator

FREE_FAILURES = 2
MAX_LOCK_SECONDS = 900
FORGET_SECONDS = 3600
MAX_TRACKED = 10_000  # emails tracked at once: the oldest are forgotten first


class LoginThrottle:
    """Failure counts and locks by email; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, float, float]] = {}  # failures, last, locked until
        self._checking: set[str] = set()  # emails whose password is being checked now

    def _current(self, email: str) -> tuple[int, float, float]:
        failures, last, until = self._state.get(email, (0, 0.0, 0.0))
        if failures and self._clock() - last > FORGET_SECONDS:
            self._state.pop(email, None)
            return 0, 0.0, 0.0
        return failures, last, until

    def remaining(self, email: str) -> int:
        """Whole seconds until `email` may try again (0: now)."""
        with self._lock:
            until = self._current(email)[2]
            return max(0, math.ceil(until - self._clock()))

    def failures(self, email: str) -> int:
        with self._lock:
            return self._current(email)[0]

    def failed(self, email: str) -> int:
        """Count a wrong password; returns the seconds of the lock it set (0: none)."""
        with self._lock:
            failures = self._current(email)[0] + 1
            lock = (0 if failures <= FREE_FAILURES
                    else min(2 ** (failures - FREE_FAILURES + 2), MAX_LOCK_SECONDS))
            now = self._clock()
            if len(self._state) >= MAX_TRACKED and email not in self._state:
                del self._state[min(self._state, key=lambda k: self._state[k][1])]
            self._state[email] = (failures, now, now + lock)
            return lock

    @contextlib.contextmanager
    def checking(self, email: str) -> Iterator[bool]:
        """While the block runs, `email`'s password is being checked: yields False (and
        checks nothing) when another check of it is already under way."""
        with self._lock:
            admitted = email not in self._checking
            self._checking.add(email)
        try:
            yield admitted
        finally:
            if admitted:
                with self._lock:
                    self._checking.discard(email)

    def succeeded(self, email: str) -> None:
        with self._lock:
            self._state.pop(email, None)
