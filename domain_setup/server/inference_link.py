"""The link between the two computing hospitals of a query: party 0 sends each round's
words to party 1's exchange route and reads party 1's in the answer.

Party 0 authenticates every exchange with a MAC whose key only the two hospitals can
derive: X25519 between its aggregation key and the peer's as the federation's member
list has it, bound to the service (the id both requests carry) and the query
(`link_key`). Party 1 reads a round's body only for a query it has open with that
member, no larger than the query's largest round, and takes it only with the MAC and in
order; party 0 retries its first round for a few seconds until party 1 has opened it.

    channel = PeerChannel(peer_url, query_id, key, sender_name)     # party 0
    exchanges.open(query_id, Rendezvous(key, service_id, caller, max_bytes))   # party 1
"""

from __future__ import annotations

import hashlib
import hmac
import queue
import threading
import time

import numpy as np

from common.mpc.channel import Counted

EXCHANGE_PREFIX = "/pneumosyft/inference/exchange/"
ROUND_TIMEOUT_SECONDS = 60  # the other party must answer a round within this
FIRST_ROUND_SECONDS = 10  # ... and start within this (a query sent to one hospital only)
OPEN_QUERIES = 16  # queries waiting for or running with their peer at once
OPEN_PER_CALLER = 2


def is_exchange_path(path: str) -> bool:
    """The one /pneumosyft path the gate passes without a token (the route checks a MAC)."""
    return path.startswith(EXCHANGE_PREFIX)


def link_key(own_private: bytes, peer_public: bytes, service_id: str, query_id: str) -> bytes:
    """The MAC key of one query of one service between two hospitals (the same on both
    sides; another service, even between the same two, has another)."""
    from nacl.bindings import crypto_scalarmult

    shared = crypto_scalarmult(own_private, peer_public)
    return hashlib.blake2b(f"pneumosyft inference link v1 {service_id} {query_id}".encode(),
                           key=shared, digest_size=32).digest()


def mac(key: bytes, query_id: str, round_number: int, body: bytes) -> str:
    message = f"{query_id}:{round_number}:".encode() + hashlib.sha256(body).digest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class PeerChannel(Counted):
    """Party 0's end: one HTTP POST per round to the peer's exchange route."""

    def __init__(self, peer_url: str, query_id: str, key: bytes, sender: str):
        import requests

        super().__init__()
        self._url = f"{peer_url.rstrip('/')}/pneumosyft/inference/exchange/{query_id}"
        self._query, self._key, self._sender = query_id, key, sender
        self._http = requests.Session()
        self._round = 0

    def exchange(self, words: np.ndarray) -> np.ndarray:
        body = np.ascontiguousarray(words, dtype="<u8").tobytes()
        self.count(len(body))
        deadline = time.monotonic() + FIRST_ROUND_SECONDS
        while True:
            response = self._http.post(
                f"{self._url}/{self._round}", data=body, timeout=ROUND_TIMEOUT_SECONDS,
                headers={"Content-Type": "application/octet-stream",
                         "X-PneumoSyft-Member": self._sender,
                         "X-PneumoSyft-MAC": mac(self._key, self._query, self._round, body)})
            # the peer has not opened the query yet (its image holder's call is on its way)
            if response.status_code != 404 or self._round or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if response.status_code != 200:
            raise ConnectionError(f"the other computing hospital refused round {self._round}: "
                                  f"{response.text[:200]}")
        self._round += 1
        return np.frombuffer(response.content, dtype="<u8").astype(np.uint64)

    def close(self) -> None:
        self._http.close()


class Rendezvous(Counted):
    """Party 1's end of one query: its protocol thread and the exchange route meet here."""

    def __init__(self, key: bytes, service_id: str, owner: str, max_bytes: int):
        super().__init__()
        self.key, self.service_id, self.owner, self.max_bytes = key, service_id, owner, max_bytes
        self.next_round = 0
        self._inbox: "queue.Queue[bytes]" = queue.Queue()
        self._outbox: "queue.Queue[bytes]" = queue.Queue()
        self.created = time.monotonic()

    # the protocol's side (a Party's channel)
    def exchange(self, words: np.ndarray) -> np.ndarray:
        body = np.ascontiguousarray(words, dtype="<u8").tobytes()
        self.count(len(body))
        self._outbox.put(body)
        try:
            theirs = self._inbox.get(timeout=ROUND_TIMEOUT_SECONDS if self.next_round
                                     else FIRST_ROUND_SECONDS)
        except queue.Empty:
            raise ConnectionError("the other computing hospital did not send its round") from None
        return np.frombuffer(theirs, dtype="<u8").astype(np.uint64)

    # the route's side
    def deliver(self, body: bytes) -> bytes:
        """Party 0's words of the next round in; party 1's words of that round out."""
        self.next_round += 1
        self._inbox.put(body)
        try:
            return self._outbox.get(timeout=ROUND_TIMEOUT_SECONDS)
        except queue.Empty:
            raise ConnectionError("this hospital's party did not reach the round") from None


class Exchanges:
    """Party 1's open queries by id (at most `OPEN_QUERIES`; stale ones are dropped)."""

    def __init__(self) -> None:
        self._open: dict[str, Rendezvous] = {}
        self._lock = threading.Lock()

    def open(self, query_id: str, rendezvous: Rendezvous) -> Rendezvous:
        """Register a query that party 0 may now exchange rounds of (ValueError: too many
        open, or this caller's limit)."""
        with self._lock:
            self._drop_stale()
            mine = sum(r.owner == rendezvous.owner for r in self._open.values())
            if query_id in self._open or len(self._open) >= OPEN_QUERIES \
                    or mine >= OPEN_PER_CALLER:
                raise ValueError("too many queries are open at this hospital (or this one is "
                                 "already): try again in a moment")
            self._open[query_id] = rendezvous
            return rendezvous

    def find(self, query_id: str) -> Rendezvous | None:
        with self._lock:
            return self._open.get(query_id)

    def close(self, query_id: str) -> None:
        with self._lock:
            self._open.pop(query_id, None)

    def _drop_stale(self) -> None:
        for query_id, rendezvous in list(self._open.items()):
            if time.monotonic() - rendezvous.created > 10 * ROUND_TIMEOUT_SECONDS:
                del self._open[query_id]
