"""How the two computing parties exchange the values they open: `exchange(words)` sends
this party's words and returns the other's (the same order on both sides). Each
channel counts rounds and bytes, per label, for the latency breakdown.

* `local_pair()`: two ends in one process (threads; the tests).
* `SocketChannel`: a TCP connection (length-prefixed frames; both directions at once,
  so two parties sending large arrays at the same time cannot deadlock).
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
from collections import defaultdict

import numpy as np

_HEADER = struct.Struct("!Q")


class Counted:
    """Rounds and bytes sent, per label."""

    def __init__(self) -> None:
        self.rounds: dict[str, int] = defaultdict(int)
        self.bytes_sent: dict[str, int] = defaultdict(int)
        self.label = "setup"

    def count(self, nbytes: int) -> None:
        self.rounds[self.label] += 1
        self.bytes_sent[self.label] += nbytes


class LocalChannel(Counted):
    """One end of an in-process pair."""

    def __init__(self, outbox: "queue.Queue[bytes]", inbox: "queue.Queue[bytes]"):
        super().__init__()
        self._out, self._in = outbox, inbox

    def exchange(self, words: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(words, dtype=np.uint64).tobytes()
        self.count(len(data))
        self._out.put(data)
        return np.frombuffer(self._in.get(timeout=120), dtype=np.uint64).copy()


def local_pair() -> tuple[LocalChannel, LocalChannel]:
    a, b = queue.Queue(), queue.Queue()
    return LocalChannel(a, b), LocalChannel(b, a)


class SocketChannel(Counted):
    """A party's end of a TCP connection to the other computing party."""

    def __init__(self, sock: socket.socket):
        super().__init__()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock

    def exchange(self, words: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(words, dtype=np.uint64).tobytes()
        self.count(len(data))
        sender = threading.Thread(target=self._sock.sendall,
                                  args=(_HEADER.pack(len(data)) + data,), daemon=True)
        sender.start()
        size = _HEADER.unpack(self._recv_exactly(_HEADER.size))[0]
        received = self._recv_exactly(size)
        sender.join()
        return np.frombuffer(received, dtype=np.uint64).copy()

    def _recv_exactly(self, size: int) -> bytes:
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            n = self._sock.recv_into(view[got:], size - got)
            if n == 0:
                raise ConnectionError("the other computing party closed the connection")
            got += n
        return bytes(buffer)

    def close(self) -> None:
        self._sock.close()


def connect_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected sockets over loopback TCP (a real connection, for the benchmark)."""
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    server.close()
    return client, accepted
