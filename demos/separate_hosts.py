"""Hospitals on separate hosts, on one machine: a network namespace per host, joined by a
bridge, each with an address of its own (10.88.0.1, .2, ...) and nothing else: no route
to this machine's other networks, no loopback shared with anyone.

Needs root (or CAP_NET_ADMIN) and `ip netns`; `available()` says why not when it cannot.
Commands run on a host through `prefix(host)` (`nsenter --net=...`: only the network
changes, the file system and cgroups stay this machine's, so the sandbox works as on a
real host). Every name is local to its namespace but the namespaces' own, which carry a
random tag, so two runs do not collide.

    with SeparateHosts(["st-mary", "royal", "researcher"]) as hosts:
        subprocess.run([*hosts.prefix("royal"), "ip", "-brief", "addr"])
        hosts.address("royal")          # '10.88.0.2'
"""

from __future__ import annotations

import secrets
import shutil
import subprocess

SUBNET = "10.88.0"


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def available() -> str | None:
    """None when namespaces can be made here, else the one-line reason they cannot."""
    if not (shutil.which("ip") and shutil.which("nsenter")):
        return "`ip` and `nsenter` (iproute2, util-linux) are not installed"
    probe = f"pneumosyft-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except OSError as exc:
        return f"cannot create a network namespace here ({exc})"
    _ip("netns", "del", probe)
    return None


class SeparateHosts:
    """Network namespaces joined by a bridge (in a namespace of its own)."""

    def __init__(self, hosts: list[str]):
        if len(set(hosts)) != len(hosts) or not 0 < len(hosts) < 250:
            raise ValueError("give 1 to 249 distinct host names")
        tag = secrets.token_hex(3)
        self.hosts = list(hosts)
        self._netns = {host: f"ps-{tag}-{i}" for i, host in enumerate(hosts, start=1)}
        self._switch = f"ps-{tag}-switch"
        self._made: list[str] = []

    def __enter__(self) -> "SeparateHosts":
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        self._add(self._switch)
        _ip("-n", self._switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self._switch, "link", "set", "br0", "up")
        for i, host in enumerate(self.hosts, start=1):
            netns = self._netns[host]
            self._add(netns)
            _ip("-n", self._switch, "link", "add", f"v{i}", "type", "veth", "peer", "name",
                "eth0", "netns", netns)
            _ip("-n", self._switch, "link", "set", f"v{i}", "master", "br0")
            _ip("-n", self._switch, "link", "set", f"v{i}", "up")
            _ip("-n", netns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")

    def address(self, host: str) -> str:
        """The host's one address on the bridge."""
        return f"{SUBNET}.{self.hosts.index(host) + 1}"

    def prefix(self, host: str) -> tuple[str, ...]:
        """A command prefix that runs its command on `host`'s network."""
        return ("nsenter", f"--net=/run/netns/{self._netns[host]}")

    def close(self) -> None:
        """Delete the namespaces (stop the processes running in them first)."""
        for name in reversed(self._made):
            try:
                _ip("netns", "del", name)
            except OSError:
                pass
        self._made.clear()
