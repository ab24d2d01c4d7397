"""The encrypted backup file: a byte stream sealed in AES-256-GCM chunks under a key that
scrypt derives from the admin's passphrase and a random salt.

    header  MAGIC (8) | version | log2 N | r | p | log2 chunk | salt (16) | key check (16)
    chunk   AES-256-GCM(key, nonce = counter (8 bytes) | 0 0 0 | last, aad = header[:30])

Every chunk but the last holds exactly ``2**log2_chunk`` plaintext bytes; the last holds
fewer (perhaps none) and is sealed with ``last = 1`` (the STREAM construction): a chunk
altered, moved, dropped, or the file cut anywhere, fails to open. The key check is an
empty message sealed under a nonce no chunk uses, so a wrong passphrase is told apart
from a damaged file before anything is read.
"""

from __future__ import annotations

import hashlib
import os
import struct
import unicodedata
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from common.errors import PneumoSyftError

MAGIC = b"PSYBAK\r\n"
VERSION = 1
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 17, 8, 1  # 128 MiB, about 0.5 s here
CHUNK_LOG2 = 20  # 1 MiB of plaintext a chunk
SALT_BYTES = TAG_BYTES = 16
_PARAMS = struct.Struct(">8sBBBBB16s")  # the authenticated part of the header
HEADER_BYTES = _PARAMS.size + TAG_BYTES
_KEY_CHECK_COUNTER = 2**64 - 1  # never a chunk's counter
# what a header may ask for: enough for any file we write, too little to exhaust the machine
_LIMITS = {"log2_n": range(14, 23), "r": range(1, 33), "p": range(1, 9),
           "chunk_log2": range(12, 25)}


class BackupError(PneumoSyftError):
    """A backup could not be written, or a backup file could not be opened."""


def _key(passphrase: str, salt: bytes, log2_n: int, r: int, p: int) -> AESGCM:
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    return AESGCM(Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(secret))


def _nonce(counter: int, last: int) -> bytes:
    return struct.pack(">Q3xB", counter, last)


class SealedWriter:
    """A write-only file object that seals what it is given into `out`; `close()` seals
    the last chunk (it does not close `out`). `sha256` and `n_bytes` describe what was
    written to `out`."""

    def __init__(self, out: BinaryIO, passphrase: str):
        salt = os.urandom(SALT_BYTES)
        self._aad = _PARAMS.pack(MAGIC, VERSION, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, CHUNK_LOG2,
                                 salt)
        self._aead = _key(passphrase, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
        self._chunk = 2**CHUNK_LOG2
        self._out, self._buffer, self._counter, self._closed = out, bytearray(), 0, False
        self._position = 0  # plaintext bytes taken (tarfile asks for `tell`)
        self._hash, self.n_bytes = hashlib.sha256(), 0
        self._emit(self._aad + self._aead.encrypt(_nonce(_KEY_CHECK_COUNTER, 2), b"", self._aad))

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._hash.update(data)
        self.n_bytes += len(data)

    def _seal(self, plain: bytes | bytearray, last: int) -> None:
        self._emit(self._aead.encrypt(_nonce(self._counter, last), bytes(plain), self._aad))
        self._counter += 1

    def write(self, data: bytes) -> int:
        if self._closed:
            raise ValueError("write to a closed backup stream")
        self._buffer += data
        self._position += len(data)
        while len(self._buffer) >= self._chunk:
            self._seal(memoryview(self._buffer)[:self._chunk], 0)
            del self._buffer[:self._chunk]
        return len(data)

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        if not self._closed:
            self._seal(self._buffer, 1)
            self._buffer, self._closed = bytearray(), True

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class SealedReader:
    """A read-only file object over a backup file: opens each chunk as it is needed and
    raises `BackupError` at the first one that does not open. `finish()` reads and checks
    the rest (call it once the consumer is done)."""

    def __init__(self, source: BinaryIO, passphrase: str, *, name: str = "the backup"):
        self._source, self._name = source, name
        header = _read_exactly(source, HEADER_BYTES)
        if len(header) < HEADER_BYTES or header[:len(MAGIC)] != MAGIC:
            raise BackupError(f"{name} is not a PneumoSyft backup file")
        magic, version, log2_n, r, p, chunk_log2, salt = _PARAMS.unpack(header[:_PARAMS.size])
        if version != VERSION:
            raise BackupError(f"{name} is a backup of format {version}; this PneumoSyft reads "
                              f"format {VERSION}")
        values = {"log2_n": log2_n, "r": r, "p": p, "chunk_log2": chunk_log2}
        if any(value not in _LIMITS[key] for key, value in values.items()):
            raise BackupError(f"{name} has a damaged header (key or chunk parameters out of "
                              "range)")
        self._aad = header[:_PARAMS.size]
        self._aead = _key(passphrase, salt, log2_n, r, p)
        try:
            self._aead.decrypt(_nonce(_KEY_CHECK_COUNTER, 2), header[_PARAMS.size:], self._aad)
        except InvalidTag:
            raise BackupError(f"wrong passphrase for {name} (or its header was altered)") from None
        self._sealed = 2**chunk_log2 + TAG_BYTES
        self._plain, self._offset, self._counter, self._done = b"", 0, 0, False
        self.n_bytes = HEADER_BYTES  # bytes of the file read so far, and their sha256
        self._hash = hashlib.sha256(header)

    def _next_chunk(self) -> None:
        sealed = _read_exactly(self._source, self._sealed)
        self.n_bytes += len(sealed)
        self._hash.update(sealed)
        last = int(len(sealed) < self._sealed)
        if last and len(sealed) < TAG_BYTES:
            raise BackupError(f"{self._name} is truncated (it ends before its last chunk)")
        try:
            self._plain = self._aead.decrypt(_nonce(self._counter, last), sealed, self._aad)
        except InvalidTag:
            what = "is truncated or was altered" if last else "was altered or is damaged"
            raise BackupError(f"{self._name} {what} (chunk {self._counter} does not "
                              "authenticate)") from None
        self._offset, self._counter = 0, self._counter + 1
        if last:
            self._done = True
            if self._source.read(1):
                raise BackupError(f"{self._name} has data after its last chunk")

    def read(self, size: int = -1) -> bytes:
        pieces, wanted = [], size if size is not None and size >= 0 else None
        while wanted is None or wanted > 0:
            if self._offset >= len(self._plain):
                if self._done:
                    break
                self._next_chunk()
                continue
            end = len(self._plain) if wanted is None else min(len(self._plain),
                                                               self._offset + wanted)
            pieces.append(self._plain[self._offset:end])
            if wanted is not None:
                wanted -= end - self._offset
            self._offset = end
        return b"".join(pieces)

    def finish(self) -> None:
        """Read to the end, checking every chunk (the tar's padding follows its last
        member)."""
        while not self._done:
            self._next_chunk()
        self._plain, self._offset = b"", 0

    @property
    def sha256(self) -> str:
        """Of the whole file, once `finish` has returned."""
        return self._hash.hexdigest()


def _read_exactly(source: BinaryIO, size: int) -> bytes:
    pieces, got = [], 0
    while got < size:
        piece = source.read(size - got)
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


__all__ = ["BackupError", "SealedReader", "SealedWriter"]
