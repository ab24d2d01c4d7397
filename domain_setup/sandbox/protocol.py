"""The wire between the server and the runner inside the sandbox.

stdin:  header length (uint32) | request header (UTF-8 JSON) | plain-data kwargs
fd 3:   (the runner moves the inherited result pipe there) frames ``kind (1 byte) | payload length (uint64) | payload``: TIMING and
        ERROR carry JSON, RESULT carries plain data. The runner sends TIMING when
        its main starts and again right before the researcher's code runs, then
        exactly one RESULT or ERROR.

Everything read from fd 3 is untrusted (the researcher's code can write to it):
the server bounds each frame and the number of frames. This module imports only
the standard library; it is also bound into the sandbox.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Iterable, Union

SANDBOX_ROOT = "/opt/pneumosyft"
HELPER_PACKAGE = "pneumosyft_sandbox"
RESULT_FD = 3

REQUEST_PREFIX = struct.Struct("<I")
FRAME_PREFIX = struct.Struct("<cQ")
TIMING, RESULT, ERROR = b"T", b"R", b"E"
MAX_JSON_FRAME = 64 * 1024
MAX_FRAMES = 4
MAX_REQUEST_HEADER = 32 * 1024 * 1024  # room for the source of a plan

Chunk = Union[bytes, bytearray, memoryview]


def request_parts(header: dict[str, Any], kwargs_parts: list[Chunk]) -> list[Chunk]:
    """The chunks to write to the runner's stdin; records the kwargs size in the header."""
    header = dict(header, kwargs_bytes=sum(len(part) for part in kwargs_parts))
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return [REQUEST_PREFIX.pack(len(text)), text, *kwargs_parts]


def read_exactly(fd: int, size: int) -> bytearray:
    """Read exactly ``size`` bytes from a blocking fd into one buffer (no extra copies)."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        count = os.readv(fd, [view[done:]])
        if count == 0:
            raise EOFError(f"input ended after {done} of {size} bytes")
        done += count
    return buffer


def read_request(fd: int) -> tuple[dict[str, Any], bytearray]:
    """Inside the sandbox: read the request header and the encoded kwargs from ``fd``."""
    (length,) = REQUEST_PREFIX.unpack(read_exactly(fd, REQUEST_PREFIX.size))
    if length > MAX_REQUEST_HEADER:
        raise ValueError(f"request header of {length} bytes")
    header = json.loads(read_exactly(fd, length).decode("utf-8"))
    return header, read_exactly(fd, int(header["kwargs_bytes"]))


def write_all(fd: int, data: Chunk) -> None:
    """Write all of ``data`` to a blocking fd."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def write_frame(fd: int, kind: bytes, parts: Iterable[Chunk]) -> None:
    """Inside the sandbox: send one frame made of ``parts``."""
    parts = list(parts)
    write_all(fd, FRAME_PREFIX.pack(kind, sum(len(memoryview(p).cast("B")) for p in parts)))
    for part in parts:
        write_all(fd, part)


def write_json_frame(fd: int, kind: bytes, payload: dict[str, Any]) -> None:
    """Inside the sandbox: send a JSON frame (TIMING or ERROR), cut to the frame bound."""
    text = json.dumps(payload).encode("utf-8")
    if len(text) > MAX_JSON_FRAME:
        text = json.dumps({key: (value[:1000] if isinstance(value, str) else value)
                           for key, value in payload.items()}).encode("utf-8")[:MAX_JSON_FRAME]
    write_frame(fd, kind, [text])


class FrameReader:
    """Server side: reassemble frames from a non-blocking fd, refusing anything oversized.

    ``frames`` holds ``(kind, payload)``; ``violation`` says why reading stopped early.
    """

    def __init__(self, fd: int, *, max_result_bytes: int) -> None:
        self.fd = fd
        self.max_result_bytes = max_result_bytes
        self.frames: list[tuple[bytes, bytearray]] = []
        self.violation: str | None = None
        self._prefix = bytearray()
        self._payload: bytearray | None = None
        self._filled = 0
        self._kind = b""

    def read(self) -> bool:
        """Read what is available; False at end of stream or after a violation."""
        try:
            if self._payload is None:
                chunk = os.read(self.fd, FRAME_PREFIX.size - len(self._prefix))
                if not chunk:
                    return self._end()
                self._prefix += chunk
                if len(self._prefix) == FRAME_PREFIX.size:
                    self._start_frame()
            else:
                count = os.readv(self.fd, [memoryview(self._payload)[self._filled:]])
                if count == 0:
                    return self._end()
                self._filled += count
            if self._payload is not None and self._filled == len(self._payload):
                self.frames.append((self._kind, self._payload))
                self._payload, self._prefix = None, bytearray()
        except BlockingIOError:
            return True
        return self.violation is None

    @property
    def finished(self) -> bool:
        """Has a run's last frame (its RESULT or ERROR) been read?"""
        return any(kind in (RESULT, ERROR) for kind, _ in self.frames)

    def _start_frame(self) -> None:
        kind, length = FRAME_PREFIX.unpack(self._prefix)
        limit = self.max_result_bytes if kind == RESULT else MAX_JSON_FRAME
        if kind not in (TIMING, RESULT, ERROR):
            self.violation = f"unknown frame kind {kind!r} on the result channel"
        elif len(self.frames) >= MAX_FRAMES:
            self.violation = "too many frames on the result channel"
        elif length > limit:
            self.violation = (f"result of {length / 2**20:.1f} MB exceeds the "
                              f"{limit / 2**20:g} MB output limit")
        else:
            self._kind, self._payload, self._filled = kind, bytearray(length), 0

    def _end(self) -> bool:
        if self._prefix and self.violation is None:
            self.violation = "the result channel ended inside a frame"
        return False
