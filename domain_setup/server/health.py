"""What ``/health`` reports beyond "the server answers": resources a request needs.

A domain whose disk is full still answers; before this it said ``200 ok`` while every
submission failed with a bare 500. ``/health`` now says ``degraded`` with a reason when
the state directory has less free space than ``start --min-free-disk-mb`` (default 500)
or cannot be written, and the server turns a 500 caused by a full disk into a one-line
507 for whoever called (`DiskFullResponses`).

    disk_problems(state.root, min_free_mb=500)   # [] or ["the domain's disk is almost full: …"]
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable

DEFAULT_MIN_FREE_MB = 500
DISK_FULL_MESSAGE = "the domain's disk is full: the request was not stored"


def free_mb(path: Path) -> int:
    """Free space (for unprivileged writers) of the file system holding `path`, in MB."""
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize // 2**20


def disk_problems(state_root: Path, *, min_free_mb: int) -> list[str]:
    """Why the state directory cannot take more writes ([] when it can)."""
    state_root = Path(state_root)
    probe = state_root / f".health-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            return [DISK_FULL_MESSAGE.split(":")[0] + " (no space left)"]
        return [f"the state directory is not writable ({exc.strerror or exc})"]
    left = free_mb(state_root)
    if left < min_free_mb:
        return [f"the domain's disk is almost full: {left} MB free, below the "
                f"{min_free_mb} MB the admin set"]
    return []


def is_disk_full(exc: BaseException) -> bool:
    """An error that says the disk (or SQLite's database) is full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "database or disk is full" in str(exc) or "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


API_CALL_PATH = "/api/v2/api_call"


class DiskFullResponses:
    """ASGI middleware: a 5xx answered while the disk is full becomes one line saying so
    (the domain log has the rest); nothing else is changed. A syft API call gets it the way
    syft answers errors, a signed `SyftError` (`syft_error_body`), so that a stock client
    shows the line; any other path gets a 507 with ``{"error": line}``."""

    def __init__(self, app: Any, state_root: Path, min_free_mb: int,
                 syft_error_body: Callable[[str], bytes]):
        self.app, self.state_root, self.min_free_mb = app, Path(state_root), min_free_mb
        self.syft_error_body = syft_error_body

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        replaced = False

        async def checked_send(message: dict) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] >= 500 \
                    and self._disk_full():
                replaced = True
                if scope.get("path") == API_CALL_PATH:
                    status, kind = 200, b"application/octet-stream"
                    body = self.syft_error_body(DISK_FULL_MESSAGE)
                else:
                    status, kind = 507, b"application/json"
                    body = json.dumps({"error": DISK_FULL_MESSAGE}).encode()
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", kind),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            if replaced:
                return  # the original body is dropped
            await send(message)

        try:
            await self.app(scope, receive, checked_send)
        except Exception as exc:
            if not (is_disk_full(exc) or self._disk_full()) or replaced:
                raise
            await checked_send({"type": "http.response.start", "status": 500, "headers": []})

    def _disk_full(self) -> bool:
        try:
            return free_mb(self.state_root) < min(self.min_free_mb, 16) or bool(
                disk_problems(self.state_root, min_free_mb=0))
        except OSError:
            return True
