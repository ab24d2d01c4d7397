"""Backup and restore of a domain's state directory, while the domain runs.

`backup` writes one encrypted file (`backup_archive`) holding a tar of:

1. a manifest (domain name, server id, time, database kind);
2. every SQLite database of the state directory (syft's first), each copied with
   SQLite's online backup API, never as a file; or syft's PostgreSQL database through
   ``pg_dump --format=custom`` when the domain has a ``db_url``;
3. the other files (identity, keys, tokens, federation members, jobs ...), all written
   atomically by the domain, so a plain read is consistent;
4. the blob store: its files are hard-linked aside before and after the database
   snapshot, so a blob the snapshot refers to is there even if deleted meanwhile (one
   the snapshot does not know is removed by recovery at the next start);
5. the audit log last, whole lines up to its size when the copy began (rotation is held
   off while its files are opened), so it covers everything in the snapshot.

Left out: ``domain.pid``, ``logs/``, ``syft/`` (scratch), hidden files (locks and
temporaries) and SQLite's side files. `restore` refuses a non-empty target, writes into a
directory beside it, checks every chunk, runs ``pg_restore`` when the backup holds a
PostgreSQL dump, appends ``domain.restored`` to the restored audit log and only then
renames the directory into place. Both record what they did in the audit log.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Iterator
from urllib.parse import quote, urlparse, urlunparse

from common.errors import PneumoSyftError
from common.processes import pid_alive
from common.secure_files import _fsync_dir, ensure_private_dir, read_secret
from domain_setup.admin.backup_archive import BackupError, SealedReader, SealedWriter
from domain_setup.server.audit import AUDIT_FILE, AuditLog
from domain_setup.state import BACKUP_PASSPHRASE_ENV, StateDir, validate_password

PASSPHRASE_ENV = BACKUP_PASSPHRASE_ENV
MANIFEST = "pneumosyft-backup.json"
STATE = "state"
PG_DUMP = "postgresql.dump"
FORMAT = 1
SKIPPED = {"domain.pid", "logs", "syft"}  # at the top of the state directory
SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
STAGING_PREFIX = ".backup-"
COPY_BYTES = 2**20


@dataclass
class Report:
    """What a backup wrote or a restore read."""

    path: Path
    sha256: str
    n_bytes: int
    files: int
    seconds: float
    manifest: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# -- the passphrase ------------------------------------------------------------------
def read_passphrase(path: str | None, *, confirm: bool) -> str:
    """From `path` (0600, one line), else $PNEUMOSYFT_BACKUP_PASSPHRASE, else asked on the
    terminal (twice when `confirm`); a new one (`confirm`) must pass the password rules."""
    if path:
        try:
            text = read_secret(path).decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise BackupError(f"{path}: the passphrase file is not UTF-8 text") from None
    elif os.environ.get(PASSPHRASE_ENV):
        text = os.environ[PASSPHRASE_ENV]
    elif sys.stdin.isatty():
        text = getpass.getpass("backup passphrase: ")
        if confirm and getpass.getpass("the same again: ") != text:
            raise BackupError("the two passphrases differ; nothing was written")
    else:
        raise BackupError(f"no passphrase: give --passphrase-file FILE or set "
                          f"${PASSPHRASE_ENV} (no terminal to ask on)")
    if not text:
        raise BackupError("the backup passphrase is empty")
    return validate_password(text, what="the backup passphrase") if confirm else text


# -- backup ----------------------------------------------------------------------------
def backup(state: StateDir, target: str | os.PathLike, passphrase: str, *,
           show_progress: bool = True) -> Report:
    """Write an encrypted snapshot of `state` to `target` (0600, atomically) and audit it
    as ``backup.created`` (through the domain when it runs)."""
    config = state.load_config()
    identity = json.loads(read_secret(state.identity_path))
    target = _checked_backup_target(Path(target), state.root)
    started = time.perf_counter()
    _remove_stale_staging(state.root)
    staging = ensure_private_dir(state.root / f"{STAGING_PREFIX}{os.getpid()}-"
                                 f"{secrets.token_hex(4)}")
    try:
        blobs = _link_aside(_Survey(state.root).blobs, state.root, staging / "files", {})
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        survey = _Survey(state.root)
        databases = [(rel, _sqlite_snapshot(state.root / rel, staging / "db" / rel))
                     for rel in survey.databases]
        dump = _pg_dump(config.db_url, staging / PG_DUMP) if config.db_url else None
        survey = _Survey(state.root)
        blobs = _link_aside(survey.blobs, state.root, staging / "files", blobs)
        files = _link_aside(survey.files, state.root, staging / "files", {})
        manifest = {"format": FORMAT, "domain": config.name, "server_id": identity["server_id"],
                    "created": created, "database": "postgresql" if dump else "sqlite",
                    "state_dir": str(state.root)}
        with _audit_snapshot(state.root) as audit, _atomic_output(target) as out:
            writer = SealedWriter(out, passphrase)
            count = _write_tar(writer, manifest, databases, dump, {**files, **blobs}, audit,
                               survey.dirs, show_progress)
            writer.close()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report = Report(target, writer.sha256, writer.n_bytes, count,
                    time.perf_counter() - started, manifest)
    _record_backup(state, config.admin_email, report)
    return report


class _Survey:
    """What the state directory holds, relative paths: SQLite databases (syft's first),
    other files, blob files and directories (the audit log is taken apart)."""

    def __init__(self, root: Path):
        self.databases: list[str] = []
        self.files: list[str] = []
        self.blobs: list[str] = []
        self.dirs: list[str] = []
        for top, dirnames, filenames in os.walk(root):
            here = Path(top)
            rel_top = here.relative_to(root)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                 and not (here == root and d in SKIPPED))
            self.dirs += [str(rel_top / d) for d in dirnames]
            for name in sorted(filenames):
                rel = str(rel_top / name)
                if name.startswith(".") or (here == root and (name in SKIPPED
                                                             or _is_audit_file(name))):
                    continue
                if not (here / name).is_file() or (here / name).is_symlink():
                    continue  # only regular files: no links, sockets or fifos
                if name.endswith(SQLITE_SIDE_FILES) and (here / name.rsplit("-", 1)[0]).exists():
                    continue
                if rel_top.parts[:1] == ("blob",):
                    self.blobs.append(rel)
                elif _is_sqlite(here / name):
                    self.databases.append(rel)
                else:
                    self.files.append(rel)
        # syft's database first: the snapshot the blob store is taken against
        self.databases.sort(key=lambda rel: (not rel.startswith("db/"), rel))


def _is_audit_file(name: str) -> bool:
    return name == AUDIT_FILE or (name.startswith(AUDIT_FILE + ".")
                                  and name[len(AUDIT_FILE) + 1:].isdigit())


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _checked_backup_target(target: Path, root: Path) -> Path:
    target = target.expanduser().absolute()
    if not target.parent.is_dir():
        raise BackupError(f"cannot write {target}: directory {target.parent} does not exist")
    if target.exists() or target.is_symlink():
        raise BackupError(f"{target} exists; choose a new file name (nothing was written)")
    if target.resolve().is_relative_to(root):
        raise BackupError(f"{target} is inside the state directory; write the backup "
                          "elsewhere")
    return target


def _remove_stale_staging(root: Path) -> None:
    """Staging directories of backups whose process died (kill -9) are removed."""
    for path in root.glob(f"{STAGING_PREFIX}*"):
        pid = path.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _link_aside(rels: list[str], root: Path, aside: Path, done: dict) -> dict:
    """Hard-link each file of `rels` not in `done` under `aside`; {rel: path to read}
    (the file itself where the file system refuses a link; gone ones are left out)."""
    done = dict(done)
    for rel in rels:
        if rel in done:
            continue
        link = aside / rel
        ensure_private_dir(link.parent)
        try:
            os.link(root / rel, link)
            done[rel] = link
        except FileNotFoundError:
            continue  # deleted since the survey
        except OSError:
            done[rel] = root / rel
    return done


def _sqlite_snapshot(source: Path, copy: Path) -> Path:
    """A consistent copy of a live SQLite database (online backup API), mode kept."""
    ensure_private_dir(copy.parent)
    os.close(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    # mode=rw: a database deleted meanwhile is an error, not a new empty one
    src = sqlite3.connect(f"file:{quote(str(source))}?mode=rw", uri=True, timeout=30)
    dst = sqlite3.connect(copy)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        dst.close()
        src.close()
    info = source.stat()
    os.chmod(copy, info.st_mode & 0o777)
    os.utime(copy, (info.st_atime, info.st_mtime))
    return copy


@contextmanager
def _atomic_output(target: Path) -> Iterator[BinaryIO]:
    """A new file for `target`, 0600 from creation, fsync'd and linked into place only when
    the block succeeds (an existing file is never replaced); removed on failure."""
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise BackupError(f"{target} appeared while the backup was written; "
                              "nothing was written") from None
        except OSError:  # a file system without hard links
            if target.exists():
                raise BackupError(f"{target} exists; nothing was written") from None
            os.rename(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def _write_tar(out: SealedWriter, manifest: dict, databases: list, dump: Path | None,
               files: dict, audit: list, dirs: list[str], show_progress: bool) -> int:
    """The tar stream: manifest, directories, databases, dump, files (blobs last), audit
    log; returns the number of files of the state directory."""
    total = (sum(copy.stat().st_size for _, copy in databases) + sum(s for _, _, s in audit)
             + (dump.stat().st_size if dump else 0) + sum(_size(p) for p in files.values()))
    with _progress(total, "Backing up", show_progress) as progress, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                         copybufsize=COPY_BYTES) as tar:
        body = json.dumps(manifest, indent=2).encode()
        tar.addfile(_member(MANIFEST, len(body), 0o600, time.time()), _Counted(body))
        for rel in dirs:
            tar.addfile(_member(f"{STATE}/{rel}", 0, 0o700, time.time(), tarfile.DIRTYPE))
        count = sum(_add_file(tar, f"{STATE}/{rel}", copy, progress) for rel, copy in databases)
        if dump is not None:
            _add_file(tar, PG_DUMP, dump, progress)
        for rel in sorted(files, key=lambda rel: (rel.startswith("blob/"), rel)):
            count += _add_file(tar, f"{STATE}/{rel}", files[rel], progress)
        for name, handle, size in audit:
            info = os.fstat(handle.fileno())
            tar.addfile(_member(f"{STATE}/{name}", size, info.st_mode, info.st_mtime),
                        _Counted(handle, progress))
            count += 1
    return count


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _member(name: str, size: int, mode: int, mtime: float,
            kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, mode & 0o777, mtime, kind
    return info


def _add_file(tar: tarfile.TarFile, name: str, path: Path, progress: Any) -> int:
    """Add one file as it is now (its size when opened); 0 if it has gone meanwhile."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return 0
    with handle:
        info = os.fstat(handle.fileno())
        tar.addfile(_member(name, info.st_size, info.st_mode, info.st_mtime),
                    _Counted(handle, progress))
    return 1


@contextmanager
def _audit_snapshot(root: Path) -> Iterator[list[tuple[str, BinaryIO, int]]]:
    """(name, open file, bytes to copy) of the audit log's files, oldest first: opened while
    the current file is locked (no rotation meanwhile), the current one cut to its whole
    lines at that moment."""
    log = AuditLog(root)
    opened: list[tuple[str, BinaryIO, int]] = []
    try:
        locked = log._open_current()  # noqa: SLF001 - the log's own lock, held for the opens
        try:
            for path in log._files():  # noqa: SLF001 - oldest first, the current one last
                try:
                    handle = open(path, "rb")
                except FileNotFoundError:
                    continue
                opened.append((path.name, handle, os.fstat(handle.fileno()).st_size))
        finally:
            os.close(locked)
        name, handle, size = opened[-1]
        start = max(0, size - COPY_BYTES)
        cut = os.pread(handle.fileno(), size - start, start).rfind(b"\n")
        opened[-1] = (name, handle, start + cut + 1 if cut >= 0 else start)
        yield opened
    finally:
        for _, handle, _ in opened:
            handle.close()


class _Counted:
    """A file object (or bytes) whose reads advance a progress bar."""

    def __init__(self, source: Any, progress: Any = None):
        self._source = source if hasattr(source, "read") else _BytesReader(source)
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if self._progress is not None:
            self._progress.update(len(data))
        return data


class _BytesReader:
    def __init__(self, data: bytes):
        self._data, self._offset = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._offset + size
        piece, self._offset = self._data[self._offset:end], min(end, len(self._data))
        return piece


@contextmanager
def _progress(total: int, what: str, show: bool) -> Iterator[Any]:
    """A byte progress bar on stderr, as uploads show (only on a terminal)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
               disable=None if show else True, leave=False, file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


# -- PostgreSQL ------------------------------------------------------------------------
def _pg_dump(db_url: str, path: Path) -> Path:
    _run_pg("pg_dump", db_url, "--format=custom", "--no-owner", f"--file={path}")
    os.chmod(path, 0o600)
    return path


def _pg_restore(db_url: str, path: Path) -> None:
    _run_pg("pg_restore", db_url, "--clean", "--if-exists", "--no-owner",
            "--single-transaction", "--exit-on-error", str(path))


def _run_pg(tool: str, db_url: str, *args: str) -> None:
    """Run a PostgreSQL client tool against `db_url`; its password (if any) goes in its
    environment, not its command line; one line on failure."""
    exe = shutil.which(tool)
    if exe is None:
        raise BackupError(f"{tool} is not installed: apt-get install postgresql-client")
    parsed = urlparse(db_url)
    env = {k: v for k, v in os.environ.items() if k.startswith("PG") or k in ("PATH", "HOME")}
    if parsed.password is not None:
        env["PGPASSWORD"] = parsed.password
        host = parsed.hostname or ""
        netloc = (f"{parsed.username}@" if parsed.username else "") + host + (
            f":{parsed.port}" if parsed.port else "")
        db_url = urlunparse(parsed._replace(netloc=netloc))
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    result = subprocess.run([exe, *args, f"--dbname={db_url}"], env=env, capture_output=True,
                            text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise BackupError(f"{tool} failed: {lines[0] if lines else f'exit {result.returncode}'}")


# -- restore ---------------------------------------------------------------------------
def restore(source: str | os.PathLike, state: StateDir, passphrase: str, *,
            db_url: str | None = None, show_progress: bool = True) -> Report:
    """Restore the backup `source` into the new or empty directory of `state`; with a
    PostgreSQL dump, into the backup's `db_url` or the one given. Nothing is left behind
    on failure."""
    from domain_setup.admin.lifecycle import validate_db_url

    source = Path(source).expanduser().absolute()
    root = state.root
    _check_restore_target(root)
    if db_url is not None:
        validate_db_url(db_url)
    try:
        handle = open(source, "rb")
    except FileNotFoundError:
        raise BackupError(f"{source} does not exist") from None
    except IsADirectoryError:
        raise BackupError(f"{source} is a directory, not a backup file") from None
    started = time.perf_counter()
    staging = root.parent / f".{root.name}.restore-{secrets.token_hex(4)}"
    try:
        with handle:
            reader = SealedReader(handle, passphrase, name=str(source))
            size = os.fstat(handle.fileno()).st_size
            ensure_private_dir(staging)
            manifest, files = _extract(reader, staging, size, db_url, show_progress)
            reader.finish()
            sha256 = reader.sha256
        restored = StateDir(staging / STATE)
        restored.create_dirs()
        config = restored.load_config()
        config.extra = _moved(config.extra, Path(manifest.get("state_dir") or root), root)
        config.db_url = db_url or config.db_url
        restored.save_config(config)
        if manifest["database"] == "postgresql":
            _pg_restore(config.db_url, staging / PG_DUMP)
        AuditLog(restored.root).record(config.admin_email, "domain.restored", target=str(source),
                                       sha256=sha256, snapshot=manifest.get("created", ""),
                                       database=manifest["database"])
        _sync_file_system(restored.root)
        _check_restore_target(root)  # still empty: nothing was created there meanwhile
        if root.exists():
            root.rmdir()
        os.rename(restored.root, root)
        _fsync_dir(root.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Report(source, sha256, size, files, time.perf_counter() - started, manifest,
                  warnings=[f"{path} does not exist here (the domain's config names it; it is "
                            "not part of the state directory)" for path in _outside(config.extra)
                            if not Path(path).exists()])


def _moved(value: Any, old: Path, new: Path) -> Any:
    """`value` (the config's extra) with paths inside the old state directory moved to the
    new one (a self-signed certificate's, say)."""
    if isinstance(value, dict):
        return {key: _moved(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_moved(item, old, new) for item in value]
    if isinstance(value, str) and value.startswith("/") and Path(value).is_relative_to(old):
        return str(new / Path(value).relative_to(old))
    return value


def _outside(value: Any) -> Iterator[str]:
    """Absolute paths in the config's extra (policies, a hospital's certificate)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            yield from _outside(item)
    elif isinstance(value, str) and value.startswith("/"):
        yield value


def _check_restore_target(root: Path) -> None:
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise BackupError(f"{root} exists and is not a directory; nothing was written")
    if root.is_dir() and any(root.iterdir()):
        raise BackupError(f"{root} is not empty: restore only into a new or empty directory "
                          "(nothing was written)")
    if not root.parent.is_dir():
        raise BackupError(f"cannot restore into {root}: directory {root.parent} does not exist")


def _extract(reader: SealedReader, staging: Path, size: int, db_url: str | None,
             show_progress: bool) -> tuple[dict, int]:
    """Unpack the tar into `staging` (the state under ``state/``); (manifest, files)."""
    manifest: dict | None = None
    files = 0
    with _progress(size, "Restoring", show_progress) as progress:
        last = reader.n_bytes
        try:
            with tarfile.open(fileobj=reader, mode="r|", bufsize=COPY_BYTES) as tar:
                for member in tar:
                    if manifest is None:
                        manifest = _read_manifest(tar, member, db_url)
                        continue
                    target = staging / _member_path(member.name)
                    if member.isdir() and member.name.startswith(f"{STATE}/"):
                        ensure_private_dir(target)
                    elif member.isfile():
                        _write_member(tar.extractfile(member), target, member)
                        files += 1
                    else:
                        raise BackupError(f"the backup holds an unexpected entry "
                                          f"{member.name[:80]!r}")
                    progress.update(reader.n_bytes - last)
                    last = reader.n_bytes
        except tarfile.TarError as exc:
            raise BackupError(f"the backup's contents are malformed ({exc})") from None
    if manifest is None:
        raise BackupError("the backup is empty")
    return manifest, files


def _read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo, db_url: str | None) -> dict:
    if member.name != MANIFEST or not member.isfile() or member.size > 65536:
        raise BackupError("the backup has no manifest: not a PneumoSyft domain backup")
    try:
        manifest = json.loads(tar.extractfile(member).read())
    except ValueError:
        raise BackupError("the backup's manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError("the backup's manifest is of an unknown format")
    if manifest.get("database") not in ("sqlite", "postgresql"):
        raise BackupError("the backup's manifest names no known database")
    if db_url is not None and manifest["database"] != "postgresql":
        raise BackupError("--db-url applies only to a backup of a domain on PostgreSQL; this "
                          "one holds its SQLite database")
    return manifest


def _member_path(name: str) -> Path:
    """A member's relative path: under ``state/`` or the dump, never absolute or upward."""
    path = PurePosixPath(name)
    if (path.is_absolute() or any(part in ("", "..", ".") for part in path.parts)
            or not (path.parts[0] == STATE or name == PG_DUMP)):
        raise BackupError(f"the backup holds an unsafe path {name[:80]!r}")
    return Path(*path.parts)


def _write_member(source: Any, target: Path, member: tarfile.TarInfo) -> None:
    ensure_private_dir(target.parent)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        while piece := source.read(COPY_BYTES):
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view):]
        os.fchmod(fd, member.mode & 0o777)
    finally:
        os.close(fd)
    os.utime(target, (member.mtime, member.mtime))


def _sync_file_system(root: Path) -> None:
    """Flush the restored files and directories to disk at once (syncfs, as ``sync -f``):
    one flush, not one fsync per file."""
    import ctypes

    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


# -- audit -----------------------------------------------------------------------------
def _record_backup(state: StateDir, admin_email: str, report: Report) -> None:
    """``backup.created`` through the running domain (its metrics see it), else straight
    into the audit log (the domain is stopped)."""
    from domain_setup.admin.lifecycle import is_domain_process

    details = {"target": str(report.path), "sha256": report.sha256,
               "bytes": str(report.n_bytes), "files": str(report.files),
               "snapshot": report.manifest["created"]}
    if is_domain_process(state.read_pid(), state):
        from domain_setup.admin.session import AdminSession

        session = AdminSession(state)
        try:
            session.audit("backup.created", **details)
            return
        except PneumoSyftError:
            pass  # stopped meanwhile: written below
        finally:
            session.close()
    AuditLog(state.root).record(admin_email, "backup.created", **details)


__all__ = ["PASSPHRASE_ENV", "Report", "backup", "read_passphrase", "restore"]
