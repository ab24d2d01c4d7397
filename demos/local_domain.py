"""A domain on this machine driven through the real CLI, for demos, tests and benchmarks
(a harness, not part of the product: it lives beside the demos).

    with LocalDomain.start_new("St Mary", state_dir) as domain:
        domain.cli("upload", "synthetic", "--name", "xray", "--n", "600")
        domain.cli("accounts", "apply", "policies/accounts.yaml")
        researcher_file = domain.researcher_file("ada@pneumosyft-research.org")
    # stopped here, even on error
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from common.errors import DomainError
from domain_setup import PROJECT_ROOT
from domain_setup.state import StateDir

_IN_PROCESS_CLI = threading.Lock()  # redirect_stdout swaps sys.stdout for every thread
# The demos' policy folder: the shipped rules, but no dataset requires DP (so that plain
# training and evaluation can be shown); `start --policies` takes it.
TRUSTED_POLICIES = PROJECT_ROOT / "demos" / "policies"
TRUSTED = ("--policies", str(TRUSTED_POLICIES))


def threads_per_domain(domains: int) -> int:
    """Torch threads each of `domains` domains on this machine gets so that, training at
    once, they do not oversubscribe its cores (each at least 1).

    Three domains each running one OpenMP thread per core on a 2-core machine
    made a federated round 2 to 8 times slower, and its time erratic."""
    return max(1, (os.cpu_count() or 1) // max(1, domains))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LocalDomain:
    """A domain in `state_dir`, started and administered with `python -m domain_setup`."""

    def __init__(self, state_dir: str | Path, *, torch_threads: int | None = None,
                 command_prefix: tuple[str, ...] = ()):
        self.state = StateDir(state_dir)
        # e.g. ("nsenter", "--net=/run/netns/h1"): every command runs on that host's network
        self.command_prefix = tuple(command_prefix)
        self._admin: Any = None
        self.server_env = ({"OMP_NUM_THREADS": str(torch_threads),
                            "MKL_NUM_THREADS": str(torch_threads)} if torch_threads else {})

    @classmethod
    def start_new(cls, name: str, state_dir: str | Path, *, port: int | None = None,
                  extra_args: tuple[str, ...] = (), torch_threads: int | None = None,
                  command_prefix: tuple[str, ...] = ()) -> "LocalDomain":
        """Create and start a domain; `torch_threads` caps its server's torch threads
        (see `threads_per_domain`), otherwise torch takes one per core; `command_prefix`
        runs every command of the domain through it (another network namespace)."""
        domain = cls(state_dir, torch_threads=torch_threads, command_prefix=command_prefix)
        domain.run("start", "--name", name, "--port", str(port or free_port()), *extra_args,
                   env=domain.server_env)
        return domain

    @property
    def url(self) -> str:
        return self.state.load_config().url

    @property
    def name(self) -> str:
        return self.state.load_config().name

    def run(self, *args: str, check: bool = True, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        """Run `python -m domain_setup ARGS --state-dir ...`; returns the finished process."""
        command = [*self.command_prefix, sys.executable, "-m", "domain_setup", *args,
                   "--state-dir", str(self.state.root)]
        result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True,
                                env=dict(os.environ, **(env or {})), timeout=timeout,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise DomainError(f"`domain_setup {' '.join(args)}` failed: "
                              f"{(result.stderr or result.stdout).strip()[-500:]}")
        return result

    def attempt(self, *args: str) -> subprocess.CompletedProcess:
        """Run a CLI command through the CLI's own `main` (the same parser, commands and
        error handling) in this process, which has syft imported already (a new process
        spends about 7 s importing it); returns its exit code, stdout and stderr, as
        `run(..., check=False)` would."""
        from domain_setup.admin.cli import main

        out, err = io.StringIO(), io.StringIO()
        with _IN_PROCESS_CLI, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([*args, "--state-dir", str(self.state.root)])
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 2
        return subprocess.CompletedProcess(["domain_setup", *args], code,
                                           out.getvalue(), err.getvalue())

    def cli(self, *args: str) -> str:
        """Run a CLI command that must succeed (see `attempt`); returns its stdout.
        Start domains with `start_new` or `start`: they run `start` as a process of its
        own, which passes the server its thread caps through the environment. With a
        `command_prefix` the command is a process of its own, run through it."""
        result = self.run(*args, check=False) if self.command_prefix else self.attempt(*args)
        if result.returncode != 0:
            raise DomainError(f"`domain_setup {' '.join(args)}` failed: "
                              f"{(result.stderr or result.stdout).strip()[-500:]}")
        return result.stdout

    def start(self) -> None:
        self.run("start", env=self.server_env)

    def stop(self) -> None:
        self.run("stop", check=False)

    @property
    def admin(self) -> Any:
        """The `AdminClient` of this domain (the facade the CLI is a layer over)."""
        from domain_setup.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient(self.state)
        return self._admin

    def researcher_file(self, email: str, path: str | Path | None = None, ttl: str = "8h") -> Path:
        """Issue a token for `email` and write the researcher's connection file."""
        path = Path(path or self.state.root / f"connection-{email.split('@')[0]}.json")
        self.cli("token", "issue", "--email", email, "--ttl", ttl, "--write-connection", str(path))
        return path

    def __enter__(self) -> "LocalDomain":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_domains(specs: list[tuple[str, Path]], *, torch_threads: int | None = None,
                  prepare: Callable[[int, LocalDomain], None] | None = None,
                  extra_args: tuple[str, ...] = ()) -> list[LocalDomain]:
    """Start one domain per (name, state_dir) at once (a start is mostly its server
    importing syft; `extra_args` go to each `start`), then `prepare(index, domain)` each
    in turn (uploads, accounts). On any failure every domain started is stopped and the
    first error raised.

        domains = start_domains([("St Mary", root / "h1"), ("County", root / "h2")],
                                prepare=lambda i, d: d.cli("federation", "enable"))
    """
    with ThreadPoolExecutor(max(1, len(specs))) as pool:
        futures = [pool.submit(LocalDomain.start_new, name, state_dir, torch_threads=torch_threads,
                               extra_args=extra_args)
                   for name, state_dir in specs]
    domains, failures = [], []
    for future in futures:
        try:
            domains.append(future.result())
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the cleanup
            failures.append(exc)
    try:
        if failures:
            raise failures[0]
        for index, domain in enumerate(domains):
            if prepare is not None:
                prepare(index, domain)
    except BaseException:
        for domain in domains:
            domain.stop()
        raise
    return domains


def join_federation(domains: list[LocalDomain]) -> None:
    """Make every domain an aggregation party and list every other one as a member of its
    federation, as each hospital's admin would (`federation enable`, then `federation
    members add NAME --url URL --public-key KEY` for each of the others)."""
    keys = {}
    for domain in domains:
        printed = domain.cli("federation", "enable")
        keys[domain.name] = printed.rsplit(":", 1)[1].strip()
    for domain in domains:
        for other in domains:
            if other is not domain:
                domain.cli("federation", "members", "add", other.name, "--url", other.url,
                           "--public-key", keys[other.name])
