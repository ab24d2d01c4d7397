"""Three hospitals and a researcher, each on a host of its own (`separate_hosts`) or all on
this machine's loopback, set up as their admins would: start with TLS, upload, accounts,
`federation enable`, cards written, exchanged as files and added, a connection file for
the researcher; then each admin's desk approves what the rules approve
(`review auto --approve-compliant --watch`). tests/test_cross_host.py and
bench/bench_cross_host.py use it.

    with SeparateHosts([*HOSPITALS, "researcher"]) as hosts, \\
            FederationOnHosts(root, hosts) as federation:
        result = federation.researcher("demos.cross_host_researcher", *federation.connection_files)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common.errors import DomainError
from demos.local_domain import PROJECT_ROOT, TRUSTED_POLICIES, free_port

HOSPITALS = {"st-mary": "St Mary", "royal": "Royal Infirmary", "county": "County General"}
HOST_PORT = 8443  # the same on every host: they are separate hosts
RESEARCHER = "ada@pneumosyft-research.org"
ACCOUNTS = PROJECT_ROOT / "policies" / "accounts.yaml"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # three domains, two cores


class FederationOnHosts:
    """The federation of `HOSPITALS`, on `hosts` (a `SeparateHosts`) or, with None, on
    127.0.0.1 (a port each); `n` synthetic images at 28 px, partitioned IID."""

    def __init__(self, root: Path, hosts: Any | None, *, n: int = 900):
        self.root, self.hosts, self.n = Path(root), hosts, n
        self.states = {host: self.root / host / "state" for host in HOSPITALS}
        self.ports = {host: HOST_PORT if hosts else free_port() for host in HOSPITALS}
        self.started: list[str] = []
        self.joined: list[str] = []
        self._watchers: list[subprocess.Popen] = []

    # -- where ---------------------------------------------------------------------------
    def prefix(self, host: str) -> tuple[str, ...]:
        return self.hosts.prefix(host) if self.hosts else ()

    def address(self, host: str) -> str:
        return self.hosts.address(host) if self.hosts else "127.0.0.1"

    def url(self, host: str) -> str:
        return f"https://{self.address(host)}:{self.ports[host]}"

    def card(self, host: str) -> Path:
        return self.root / f"{host}.card.json"

    @property
    def connection_files(self) -> list[str]:
        return [str(self.root / f"{host}.ada.json") for host in HOSPITALS]

    # -- running things --------------------------------------------------------------------
    def run(self, host: str, *command: str, timeout: float = 900) -> str:
        """`python COMMAND...` on `host`; its stdout (DomainError when it fails)."""
        done = subprocess.run([*self.prefix(host), sys.executable, *command], cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env={**os.environ, **ONE_THREAD})
        if done.returncode != 0:
            raise DomainError(f"{host}: {' '.join(command)[:80]}: "
                              f"{done.stderr.strip()[-1500:]}")
        return done.stdout

    def admin(self, host: str, *commands: str) -> str:
        """The hospital admin's CLI commands, at the hospital's host, in one process."""
        return self.run(host, "-m", "demos.admin_session", str(self.states[host]), *commands)

    def researcher(self, *command: str) -> dict:
        """A researcher's script on the researcher's host; the JSON of its last line."""
        host = "researcher" if self.hosts else next(iter(HOSPITALS))
        return json.loads(self.run(host, *command).strip().splitlines()[-1])

    # -- set up and tear down ------------------------------------------------------------
    def __enter__(self) -> "FederationOnHosts":
        try:
            self._set_up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, index: int, host: str) -> str:
        return self.admin(
            host,
            f"start --name '{HOSPITALS[host]}' --port {self.ports[host]} --host "
            f"{self.address(host)} --tls-self-signed --policies {TRUSTED_POLICIES}",
            f"upload synthetic --name xray --n {self.n} --size 28 --partition {index}/3 "
            "--no-progress", f"accounts apply {ACCOUNTS}", "federation enable",
            f"federation card --write {self.card(host)}")

    def _join(self, host: str) -> str:
        return self.admin(host, *[f"federation members add {self.card(other)}"
                                  for other in HOSPITALS if other != host],
                          f"token issue --email {RESEARCHER} --write-connection "
                          f"{self.root / host}.ada.json")

    def _set_up(self) -> None:
        with ThreadPoolExecutor(len(HOSPITALS)) as pool:
            self.started = list(pool.map(self._start, range(1, len(HOSPITALS) + 1), HOSPITALS))
        with ThreadPoolExecutor(len(HOSPITALS)) as pool:  # the admins exchange cards
            self.joined = list(pool.map(self._join, HOSPITALS))
        self._watchers = [subprocess.Popen(
            [*self.prefix(host), sys.executable, "-m", "domain_setup", "review", "auto",
             "--approve-compliant", "--watch", "1", "--state-dir", str(self.states[host])],
            cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL) for host in HOSPITALS]

    def close(self) -> None:
        """Stop the admins' desks (SIGINT: their sessions end cleanly) and the domains."""
        for watcher in self._watchers:
            watcher.send_signal(signal.SIGINT)
        for watcher in self._watchers:
            try:
                watcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                watcher.kill()
                watcher.wait()
        self._watchers = []
        for host in HOSPITALS:
            if self.states[host].exists():
                subprocess.run([*self.prefix(host), sys.executable, "-m", "domain_setup", "stop",
                                "--state-dir", str(self.states[host])], cwd=PROJECT_ROOT,
                               capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
