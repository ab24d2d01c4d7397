"""Stream an allocated syft blob to disk: the fast half of a dataset upload.

    PUT /pneumosyft/blob/{entry_id}     body: the blob's bytes      (upload_dataset)

syft 0.9.5 writes an on-disk blob through one signed API call
(``blob_storage.write_to_disk``) holding the whole serialised object: the admin's
client serialises it twice, signs it, the gate and syft each deserialise it, syft
verifies the signature and writes it, all in memory and in Python, about 5 MB/s for a
65 MB array. Here the admin's client still allocates the blob with syft's own
``blob_storage.allocate`` (a `BlobStorageEntry` uploaded by that account, in syft's
database) and still stores the twin and the dataset with syft's own calls; only the
bytes of the blob come over this route, streamed to a temporary file next to the
allocated location, fsync'd, then linked into place. The file syft reads afterwards is
exactly the one ``write_to_disk`` would have written.

A blob is written once: the entry must exist, have been allocated by the caller's own
account, not be written yet, and the body must have exactly the entry's ``file_size``
bytes. Anything else is refused and leaves no file behind. syft's own
``blob_storage.write_to_disk`` is held to the same rules (`server/syft_guards`).
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from common import syft_compat

_ENTRY_ID = re.compile(r"[0-9a-f]{32}")
WRITE_BATCH_BYTES = 8 << 20  # body chunks gathered per write in a worker thread


class BlobRefusal(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def _entry(worker: Any, entry_id: str) -> Any:
    """The blob entry, read with the server's own credentials (None when unknown)."""
    try:
        return worker.services.blob_storage.stash.get_by_uid(
            worker.verify_key, syft_compat.to_uid(entry_id)).unwrap()
    except Exception:  # syft raises NotFoundException subclasses
        return None


def allocated_target(worker: Any, entry: Any) -> Path:
    """The allocated file, which must lie in the domain's blob directory."""
    base = Path(worker.blob_storage_client.config.base_directory).resolve()
    path = Path(entry.location.path)
    path = (path if path.is_absolute() else base / path).resolve()
    if path.parent != base:
        raise BlobRefusal(400, "blob location is outside the domain's blob store")
    return path


def _write_all(fd: int, chunks: list[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]


def _finish(fd: int, partial: Path, target: Path) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(partial, target)  # fails if the blob was written meanwhile: write once
    except FileExistsError:
        raise BlobRefusal(409, "blob is already written") from None
    finally:
        partial.unlink(missing_ok=True)


def _partial(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}")


def write_once(target: Path, chunks: list[bytes]) -> None:
    """Write `chunks` to `target` as the route does: a private temporary file beside it,
    fsync'd, then linked into place, which fails if the blob exists (BlobRefusal 409)."""
    if target.exists():
        raise BlobRefusal(409, "blob is already written")
    partial = _partial(target)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _write_all(fd, chunks)
    except BaseException:
        os.close(fd)
        partial.unlink(missing_ok=True)
        raise
    _finish(fd, partial, target)


def make_blob_router(worker: Any, gate: Any) -> APIRouter:
    """The blob route; the caller's role must hold ``upload_dataset``."""
    from domain_setup.server.routes import route_caller

    router = APIRouter()

    def check(request: Request, entry_id: str) -> tuple[Any, Path]:
        account = route_caller(gate, request, "upload_dataset", "upload datasets")
        if not _ENTRY_ID.fullmatch(entry_id):
            raise BlobRefusal(404, "unknown blob entry")
        entry = _entry(worker, entry_id)
        user = syft_compat.user_by_email(worker, account.email)
        if entry is None or user is None or str(entry.uploaded_by) != str(user.verify_key):
            raise BlobRefusal(404, "unknown blob entry, or allocated by another account")
        target = allocated_target(worker, entry)
        if target.exists():
            raise BlobRefusal(409, "blob is already written")
        length = request.headers.get("content-length", "")
        if not length.isdigit() or int(length) != int(entry.file_size):
            raise BlobRefusal(400, f"body must be exactly the allocated {entry.file_size} bytes")
        return entry, target

    @router.put("/{entry_id}")
    async def write_blob(entry_id: str, request: Request) -> Any:
        try:
            entry, target = await anyio.to_thread.run_sync(check, request, entry_id)
        except BlobRefusal as refusal:
            return JSONResponse({"error": refusal.reason}, status_code=refusal.status)
        partial = _partial(target)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        written, batch, batch_bytes, finished = 0, [], 0, False
        try:
            async for chunk in request.stream():
                written += len(chunk)
                if written > entry.file_size:
                    raise BlobRefusal(400, "body is longer than the allocated size")
                batch.append(chunk)
                batch_bytes += len(chunk)
                if batch_bytes >= WRITE_BATCH_BYTES:
                    await anyio.to_thread.run_sync(_write_all, fd, batch)
                    batch, batch_bytes = [], 0
            if written != entry.file_size:
                raise BlobRefusal(400, f"body ended after {written} of {entry.file_size} bytes")
            await anyio.to_thread.run_sync(_write_all, fd, batch)
            finished = True
            await anyio.to_thread.run_sync(_finish, fd, partial, target)
        except BlobRefusal as refusal:
            return JSONResponse({"error": refusal.reason}, status_code=refusal.status)
        finally:
            if not finished:
                os.close(fd)
                partial.unlink(missing_ok=True)
        gate.audit.record(request.state.claims["sub"], "blob.write", target=entry_id,
                          outcome="ok", bytes=str(written))
        return {"written": written}

    return router
