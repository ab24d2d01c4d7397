"""Talk to a running sandbox without deadlocks: feed stdin from a thread while
reading stdout, stderr and the result channel together, all bounded, until they
close, the deadline passes, or the result channel misbehaves.
"""

from __future__ import annotations

import os
import selectors
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Sequence

from .protocol import Chunk, FrameReader, write_all

READ_CHUNK = 1 << 16


class BoundedLog:
    """Keeps the first ``limit`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        self.data += chunk[:max(room, 0)]
        self.dropped += max(len(chunk) - max(room, 0), 0)

    def text(self) -> str:
        """The kept bytes as text, with a note of how much was dropped."""
        text = self.data.decode("utf-8", errors="replace")
        if self.dropped:
            text += f"\n[... {self.dropped} more bytes dropped: output limit {self.limit} bytes]"
        return text


@dataclass
class Exchange:
    """What came out of one run (``timed_out``: the deadline passed first)."""

    stdout: BoundedLog
    stderr: BoundedLog
    frames: FrameReader
    feeder: threading.Thread | None = None
    timed_out: bool = False
    feed_errors: list[BaseException] = field(default_factory=list)

    def finish_feeding(self, timeout: float = 10.0) -> None:
        """Wait for the stdin thread (it ends once the sandbox is gone); re-raise its error."""
        if self.feeder is not None:
            self.feeder.join(timeout)
        if self.feed_errors:
            raise self.feed_errors[0]


def _feed(stream: IO[bytes], parts: Sequence[Chunk], errors: list[BaseException],
          close: bool = True) -> None:
    try:
        for part in parts:
            write_all(stream.fileno(), part)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the sandbox died or stopped reading; its exit status tells why
    except OSError as exc:
        errors.append(exc)
    finally:
        if close:
            stream.close()


def _drain(log: BoundedLog, fd: int) -> bool:
    try:
        chunk = os.read(fd, READ_CHUNK)
    except BlockingIOError:
        return True
    log.add(chunk)
    return bool(chunk)


def exchange(*, stdin: IO[bytes], stdout: IO[bytes], stderr: IO[bytes], result_fd: int,
             request: Sequence[Chunk], deadline: float, max_log_bytes: int,
             max_result_bytes: int, session: bool = False) -> Exchange:
    """Run the exchange until every output closes, ``deadline`` (monotonic) passes, or the
    result channel is violated. The caller kills the sandbox afterwards in every case.
    In a `session` the sandbox serves more requests: stdin stays open, and the exchange
    ends once this request's answer (its RESULT or ERROR frame) has been read."""
    result = Exchange(BoundedLog(max_log_bytes), BoundedLog(max_log_bytes),
                      FrameReader(result_fd, max_result_bytes=max_result_bytes))
    result.feeder = threading.Thread(target=_feed, args=(stdin, request, result.feed_errors,
                                                         not session),
                                     name="sandbox-stdin", daemon=True)
    result.feeder.start()
    readers = {stdout.fileno(): lambda: _drain(result.stdout, stdout.fileno()),
               stderr.fileno(): lambda: _drain(result.stderr, stderr.fileno()),
               result_fd: result.frames.read}
    with selectors.DefaultSelector() as selector:
        for fd, reader in readers.items():
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ, reader)
        while selector.get_map() and result.frames.violation is None \
                and not (session and result.frames.finished):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result.timed_out = True
                break
            for key, _ in selector.select(min(remaining, 1.0)):
                if not key.data():
                    selector.unregister(key.fd)
    return result
