"""start, stop and status of a domain: a detached server process per state directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

import requests

from common.errors import DomainError, PneumoSyftError
from common.processes import pid_alive
from domain_setup import PROJECT_ROOT
from domain_setup import operating_limits
from domain_setup import tls_certificate
from domain_setup.exposure import INSECURE_HTTP_KEY, check_exposure
from domain_setup.state import TLS_KEY, DomainConfig, StateDir, validate_name

START_TIMEOUT_SECONDS = 240
STOP_TIMEOUT_SECONDS = 30


def is_domain_process(pid: int | None, state: StateDir) -> bool:
    """Is `pid` this state directory's server? A pid file left by a killed server may name
    a process that reused the number: it is neither "already running" nor ours to stop."""
    if not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # started as `python -m domain_setup.server STATE_DIR` (start), or as `python -m
    # domain_setup start --foreground --state-dir STATE_DIR` (a service), STATE_DIR resolved
    foreground = {b"domain_setup", b"start", b"--foreground"} <= set(argv)
    return (b"domain_setup.server" in argv or foreground) and os.fsencode(str(state.root)) in argv


def is_healthy(url: str) -> bool:
    """Does the domain answer /health (ok or degraded)?"""
    return health(url) is not None


def health(url: str) -> dict | None:
    """The domain's /health answer (status ``ok`` or ``degraded`` with its problems), or
    None when it does not answer."""
    try:
        response = requests.get(f"{url}/health", timeout=2)
        return response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # like uvicorn: connections in TIME_WAIT from before a restart do not block us,
        # another process listening on the port does
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise DomainError(f"port {port} on {host} is already in use") from None


def validate_db_url(db_url: str | None) -> str | None:
    """Only PostgreSQL URLs are accepted for --db-url (SQLite in the state dir is the default)."""
    if db_url is None:
        return None
    parsed = urlparse(db_url)
    if parsed.scheme != "postgresql" or not parsed.hostname or not parsed.path.strip("/"):
        raise DomainError(f"invalid --db-url {db_url!r}: expected postgresql://USER@HOST:PORT/DB")
    return db_url


def _check_database(db_url: str) -> None:
    import psycopg

    try:
        with psycopg.connect(db_url, connect_timeout=5):
            pass
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DomainError(f"cannot connect to the database: {first}") from None


def resolve_config(state: StateDir, *, name: str | None, port: int | None, host: str | None,
                   db_url: str | None, policies: str | None, admin_email: str | None,
                   jwt_algorithm: str | None,
                   operating: Mapping[str, Any] | None = None,
                   insecure_http: bool = False, tls_cert: str | None = None,
                   tls_key: str | None = None, tls_self_signed: bool = False) -> DomainConfig:
    """Merge command-line options with what the state directory remembers; `operating`
    holds the operating limits (`domain_setup.operating_limits`) given this time;
    `insecure_http` holds for this start only (`domain_setup.exposure`); TLS, once on,
    stays on (`domain_setup.tls_certificate`)."""
    config = _resolve_identity(state, name=name, port=port, host=host, db_url=db_url,
                               policies=policies, admin_email=admin_email,
                               jwt_algorithm=jwt_algorithm)
    config.extra.update(operating_limits.checked(operating or {}))
    config.extra[INSECURE_HTTP_KEY] = bool(insecure_http)
    tls = tls_certificate.checked_choice(state, config.extra.get(TLS_KEY), cert=tls_cert,
                                         key=tls_key, self_signed=tls_self_signed)
    if tls:
        config.extra[TLS_KEY] = tls
    return config


def _resolve_identity(state: StateDir, *, name: str | None, port: int | None, host: str | None,
                      db_url: str | None, policies: str | None, admin_email: str | None,
                      jwt_algorithm: str | None) -> DomainConfig:
    if state.exists():
        config = state.load_config()
        if name and name != config.name:
            raise DomainError(f"{state.root} holds domain {config.name!r}, not {name!r}")
        if db_url and db_url != config.db_url:
            raise DomainError(f"{state.root} keeps its data in its first database; "
                              "start a new state directory for another --db-url")
        config.port = port or config.port
        config.host = host or config.host
        return config
    if not name or not port:
        raise DomainError("a new domain needs --name and --port")
    config = DomainConfig(name=validate_name(name), host=host or "127.0.0.1", port=port,
                          db_url=validate_db_url(db_url))
    if admin_email:
        config.admin_email = admin_email
    if jwt_algorithm:
        config.jwt_algorithm = jwt_algorithm
    if policies:
        config.extra["policies_dir"] = str(Path(policies).resolve())
    return config


def start(state: StateDir, config: DomainConfig, *, progress=print) -> DomainConfig:
    """Start the domain in a detached process and wait until it answers."""
    from domain_setup.policy.snapshot import load_domain_policies

    if not 1024 <= config.port <= 65535:
        raise DomainError(f"port {config.port} is outside 1024-65535")
    pid = state.read_pid()
    if is_domain_process(pid, state):
        raise DomainError(f"domain {config.name!r} is already running (pid {pid}) at {config.url}")
    check_exposure(config)  # plain HTTP beyond loopback only with --insecure-http
    load_domain_policies(config)  # a malformed policy file stops us before anything is written
    if config.db_url:
        _check_database(config.db_url)
    _check_port_free(config.host, config.port)
    state.create_dirs()
    expiring = tls_certificate.ensure_certificate(state, config)
    if expiring:
        progress(f"warning: {expiring}")
    tls_certificate.trust_own_domain(config)
    state.save_config(config)
    state.load_or_create_admin_password()  # here, so that no secret is in the server's env
    started = time.time()
    log = open(state.log_path, "ab")
    env = dict(server_environment(), PYTHONPATH=str(PROJECT_ROOT))
    child = subprocess.Popen([sys.executable, "-m", "domain_setup.server", str(state.root)],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=PROJECT_ROOT, env=env, start_new_session=True)
    log.close()
    progress(f"starting domain {config.name!r} (pid {child.pid}), log: {state.log_path}")
    while time.time() - started < START_TIMEOUT_SECONDS:
        if child.poll() is not None:
            raise DomainError(f"the domain exited during start-up (code {child.returncode}); "
                              f"last log line: {_last_log_line(state.log_path)}")
        if is_healthy(config.url) and _connection_written_since(state, started):
            return config
        time.sleep(0.5)
    child.terminate()
    raise DomainError(f"the domain did not answer within {START_TIMEOUT_SECONDS} s; "
                      f"see {state.log_path}")


def server_environment() -> dict[str, str]:
    """This process's environment without the secrets it may carry (account passwords, a
    backup passphrase)."""
    from domain_setup.state import ADMIN_PASSWORD_ENV, BACKUP_PASSPHRASE_ENV

    return {key: value for key, value in os.environ.items()
            if key not in (ADMIN_PASSWORD_ENV, BACKUP_PASSPHRASE_ENV)
            and not key.startswith("PNEUMOSYFT_PASSWORD_")}


def _connection_written_since(state: StateDir, since: float) -> bool:
    try:
        return state.connection_path.stat().st_mtime >= since - 1
    except FileNotFoundError:
        return False


def _last_log_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["(empty log)"])[-1][:300]


def stop(state: StateDir) -> bool:
    """Stop the running domain (SIGTERM, then SIGKILL); False when it was not running."""
    pid = state.read_pid()
    if not is_domain_process(pid, state):
        state.pid_path.unlink(missing_ok=True)  # none, or a stale file naming another process
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + STOP_TIMEOUT_SECONDS
    while time.time() < deadline and pid_alive(pid):
        time.sleep(0.2)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    state.pid_path.unlink(missing_ok=True)
    return True


def status(state: StateDir) -> dict:
    """Name, URL, pid and health of the domain of `state`."""
    config = state.load_config()
    pid = state.read_pid()
    running = is_domain_process(pid, state)
    tls_certificate.trust_own_domain(config)
    answer = health(config.url) if running else None
    return {"name": config.name, "url": config.url, "pid": pid if running else None,
            "running": running, "healthy": answer is not None,
            "problems": (answer or {}).get("problems", []),
            "state_dir": str(state.root),
            "database": "postgresql" if config.db_url else "sqlite (state dir)",
            "tls_fingerprint": tls_certificate.fingerprint(config)}


__all__ = ["start", "stop", "status", "resolve_config", "PneumoSyftError"]
