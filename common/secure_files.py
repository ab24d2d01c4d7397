"""Writing and reading secrets and state files: atomic, private from creation.

A file is written to a temporary name in the same directory (created 0600 with
O_EXCL, so it is never readable by others, not even for a moment), fsynced,
renamed over the target and the directory fsynced: a reader sees the old file
or the new one, never half of one, even after a crash.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from common.errors import PneumoSyftError

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
_GROUP_OTHER = stat.S_IRWXG | stat.S_IRWXO

PathLike = str | os.PathLike


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_bytes_atomic(path: PathLike, data: bytes, mode: int = PRIVATE_FILE_MODE) -> Path:
    """Atomically replace `path` with `data`; the file has `mode` from its creation."""
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():
        raise PneumoSyftError(f"cannot write {path}: directory {directory} does not exist")
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # Created with at most 0600 whatever `mode` is, widened only once fully written.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                 mode & PRIVATE_FILE_MODE)
    try:
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)  # exact mode, independent of the umask
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return path


def write_secret(path: PathLike, data: bytes | str) -> Path:
    """Atomically write a secret, readable by its owner only (0600)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return write_bytes_atomic(path, data, PRIVATE_FILE_MODE)


def read_secret(path: PathLike) -> bytes:
    """Read a secret, refusing a file that grants any group or other permission."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PneumoSyftError(f"{path} does not exist") from None
    except PermissionError:
        raise PneumoSyftError(f"{path} is not readable by you") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())  # the file actually opened, not a swapped one
        if not stat.S_ISREG(info.st_mode):
            raise PneumoSyftError(f"{path} is not a regular file")
        if info.st_mode & _GROUP_OTHER:
            raise PneumoSyftError(
                f"{path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"chmod 600 it"
            )
        return handle.read()


def write_json_atomic(path: PathLike, obj: Any, mode: int = PRIVATE_FILE_MODE) -> Path:
    """Atomically write `obj` as indented JSON (0600 unless told otherwise)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8"), mode)


def read_json(path: PathLike, *, private: bool = False) -> Any:
    """Read a JSON file; with `private=True` it must not be readable by others."""
    path = Path(path)
    if private:
        raw = read_secret(path)
    else:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise PneumoSyftError(f"{path} does not exist") from None
        except IsADirectoryError:
            raise PneumoSyftError(f"{path} is a directory, not a JSON file") from None
        except PermissionError:
            raise PneumoSyftError(f"{path} is not readable by you") from None
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise PneumoSyftError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise PneumoSyftError(f"{path}: invalid JSON (line {exc.lineno}: {exc.msg})") from None


def ensure_private_dir(path: PathLike) -> Path:
    """Create `path` (and parents) if missing; the directory itself ends up 0700."""
    path = Path(path)
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    except FileExistsError:
        raise PneumoSyftError(f"{path} exists and is not a directory") from None
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise PneumoSyftError(f"{path} exists and is not a directory")
    if stat.S_IMODE(info.st_mode) != PRIVATE_DIR_MODE:
        if info.st_uid != os.geteuid():
            raise PneumoSyftError(f"{path} belongs to another user; use a directory of your own")
        os.chmod(path, PRIVATE_DIR_MODE)
    return path
