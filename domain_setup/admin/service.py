"""`python -m domain_setup service`: a systemd unit that runs the domain as a user of its own.

    unit = ServiceUnit.of(user="pneumosyft", state_dir="/var/lib/pneumosyft", port=8081,
                          start_args=["--name", "St Mary Pneumonia Unit"])
    print(unit.render())          # or unit.write("/etc/systemd/system/pneumosyft.service")

The server runs `start --foreground` as that user; the sandbox then uses bubblewrap
through unprivileged user namespaces and makes its runs' cgroups in the cgroup subtree
systemd delegates to the service (`Delegate=yes`; see `domain_setup/sandbox/cgroups.py`).
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import shlex
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from common.errors import DomainError
from common.secure_files import write_bytes_atomic
from domain_setup import PROJECT_ROOT

DEFAULT_USER = "pneumosyft"
UNIT_NAME = "pneumosyft.service"
STATE_ROOT = Path("/var/lib")  # where systemd's StateDirectory= lives
HOMES = (Path("/home"), Path("/root"), Path("/run/user"))  # what ProtectHome=yes hides
RESERVED_START_OPTIONS = ("--foreground", "--state-dir", "--host", "--port")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
_PATH = re.compile(r"/[A-Za-z0-9._@+/-]*")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9._@+/:=,-]+")


def check_user(name: str) -> str:
    """A system user name for the service; never root."""
    if not _USER.fullmatch(name or ""):
        raise DomainError(f"invalid --user {name!r}: lower-case letters, digits, _ and -, "
                          f"at most 31, starting with a letter or _")
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        uid = None
    if name == "root" or uid == 0:
        raise DomainError(f"--user {name} is root: the service runs as an unprivileged user")
    return name


def check_path(path: str | os.PathLike, what: str) -> Path:
    """An absolute path a unit file can carry without quoting (no spaces, %, $ or quotes)."""
    resolved = Path(path).expanduser().absolute()
    if not _PATH.fullmatch(str(resolved)) or resolved == Path("/"):
        raise DomainError(f"{what} {str(resolved)!r} cannot go in a unit file: use a path of "
                          f"letters, digits and . _ @ + - only")
    return resolved


def check_port(port: int | None) -> int | None:
    """A port an unprivileged user may listen on (1024-65535), or None (the remembered one)."""
    if port is not None and (type(port) is not int or not 1024 <= port <= 65535):
        raise DomainError(f"--port {port} is outside 1024-65535 (an unprivileged service "
                          f"cannot listen below 1024)")
    return port


def check_host(host: str | None) -> str | None:
    """An IP address or host name, or None (the remembered one)."""
    if host is None:
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        if _HOST.fullmatch(host):
            return host
    raise DomainError(f"invalid --host {host!r}: an IP address or a host name")


def check_start_args(args: Sequence[str]) -> tuple[str, ...]:
    """Further `start` options (after a `--`, dropped): one line each, and none the unit
    sets itself."""
    args = list(args[1:] if args[:1] == ["--"] else args)
    for arg in args:
        if not arg.isprintable():
            raise DomainError(f"start option {arg!r} holds a control character")
        if arg.split("=", 1)[0] in RESERVED_START_OPTIONS:
            raise DomainError(f"{arg.split('=', 1)[0]} is set by the unit itself: "
                              f"give it to `service`, not after --")
    return tuple(args)


def _exec_word(word: str) -> str:
    """One ExecStart= argument: quoted when needed; systemd's % and $ doubled."""
    if _PLAIN_WORD.fullmatch(word):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _unreachable(path: Path, user: str) -> Path | None:
    """The first directory on the way to `path` that `user` may not enter (others' x bit,
    or the owner's or group's when the user exists), else None."""
    try:
        entry = pwd.getpwnam(user)
        uid, gids = entry.pw_uid, {entry.pw_gid}
    except KeyError:
        uid, gids = None, set()
    for directory in [*reversed(path.parents), path]:
        try:
            info = directory.stat()
        except OSError:
            return directory
        if not stat.S_ISDIR(info.st_mode):
            continue
        bit = (stat.S_IXUSR if info.st_uid == uid else
               stat.S_IXGRP if info.st_gid in gids else stat.S_IXOTH)
        if not info.st_mode & bit:
            return directory
    return None


@dataclass(frozen=True)
class ServiceUnit:
    """What the unit runs: who, where, and the `start` options."""

    user: str
    state_dir: Path
    project: Path
    python: Path
    host: str | None = None
    port: int | None = None
    start_args: tuple[str, ...] = ()

    @classmethod
    def of(cls, *, user: str = DEFAULT_USER, state_dir: str | os.PathLike,
           host: str | None = None, port: int | None = None, start_args: Sequence[str] = (),
           python: str | os.PathLike = sys.executable,
           project: str | os.PathLike = PROJECT_ROOT) -> "ServiceUnit":
        """Validate every input (DomainError, one line)."""
        python_path = check_path(python, "python")
        if not os.access(python_path, os.X_OK):
            raise DomainError(f"python {python_path} is not an executable")
        return cls(check_user(user), check_path(state_dir, "state directory"),
                   check_path(project, "project"), python_path, check_host(host),
                   check_port(port), check_start_args(start_args))

    @property
    def state_directory(self) -> str | None:
        """StateDirectory= (relative to /var/lib) when the state dir lives there."""
        if _under(self.state_dir, STATE_ROOT) and self.state_dir != STATE_ROOT:
            return str(self.state_dir.relative_to(STATE_ROOT))
        return None

    def exec_start(self) -> list[str]:
        """The server's command line."""
        args = [str(self.python), "-m", "domain_setup", "start", "--foreground",
                "--state-dir", str(self.state_dir)]
        if self.host:
            args += ["--host", self.host]
        if self.port:
            args += ["--port", str(self.port)]
        return args + list(self.start_args)

    def problems(self) -> list[str]:
        """What would keep the unit from working here (warnings: the admin may fix them)."""
        found = []
        for path, what in ((self.project, "the project"),
                           (Path(os.path.realpath(self.python)), "its Python")):
            blocked = _unreachable(path, self.user)
            if blocked is not None:
                found.append(f"{what} ({path}) is not reachable by user {self.user}: {blocked} "
                             f"is closed to it; install it where the service user can read it")
        return found

    def install_commands(self) -> list[str]:
        """The root commands that create the user and install and start the unit."""
        user = self.user
        commands = [f"useradd --system --user-group --home-dir /nonexistent --no-create-home "
                    f"--shell /usr/sbin/nologin {user}"]
        if self.state_directory is None:
            commands.append(f"install -d -m 0700 -o {user} -g {user} {self.state_dir}")
        if self.state_dir.exists():
            commands.append(f"chown -R {user}:{user} {self.state_dir}  # the domain already "
                            f"there becomes the service's")
        command = [str(self.python), "-m", "domain_setup", "service", "--write",
                   f"/etc/systemd/system/{UNIT_NAME}", "--user", user, "--state-dir",
                   str(self.state_dir)]
        command += ["--host", self.host] if self.host else []
        command += ["--port", str(self.port)] if self.port else []
        command += ["--", *self.start_args] if self.start_args else []
        commands += [f"cd {self.project} && {shlex.join(command)}",
                     "systemctl daemon-reload",
                     f"systemctl enable --now {UNIT_NAME}",
                     f"runuser -u {user} -- {self.python} -m domain_setup status --state-dir "
                     f"{self.state_dir}; journalctl -u {UNIT_NAME}"]
        return commands

    def render(self) -> str:
        """The unit file's text."""
        user = self.user
        protect_home = ["ProtectHome=yes"]
        if any(_under(path, home) for path in (self.project, self.python, self.state_dir,
                                               Path(os.path.realpath(self.python)))
               for home in HOMES):
            protect_home = ["# the project, its Python or the state directory is in a home",
                            "ProtectHome=read-only"]
        if self.state_directory is not None:
            state = [f"StateDirectory={self.state_directory}", "StateDirectoryMode=0700"]
        else:
            state = [f"ReadWritePaths={self.state_dir}"]
        lines = [
            f"# {UNIT_NAME}: the PneumoSyft domain of {self.state_dir} as user {user}",
            "# (written by `python -m domain_setup service`). Install, as root:",
            *(f"#   {command}" for command in self.install_commands()),
            f"# Every admin command runs as {user} too (`runuser -u {user} -- ...`): run as",
            "# root, it would leave files in the state directory that the domain cannot read.",
            "",
            "[Unit]",
            "Description=PneumoSyft hospital domain",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=exec",
            f"User={user}",
            f"Group={user}",
            f"WorkingDirectory={self.project}",
            "ExecStart=" + " ".join(_exec_word(word) for word in self.exec_start()),
            "Restart=on-failure",
            "RestartSec=5",
            "# the sandbox makes a cgroup per run (memory and process limits) in the service's",
            "# own subtree; with cgroup v2 the server moves into its leaf pneumosyft-domain",
            "Delegate=yes",
            "# a plan killed by the OOM killer in its run's cgroup must not stop the domain",
            "OOMPolicy=continue",
            *state,
            "UMask=0077",
            "# the sandbox is bubblewrap in unprivileged user namespaces: no setuid, no",
            "# capability outside them",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=",
            "RestrictSUIDSGID=yes",
            "# / read-only but the state directory; bwrap mounts only inside its namespace",
            "ProtectSystem=strict",
            *protect_home,
            "PrivateTmp=yes",
            "# connections, the database and each sandbox's pipes (plans get max_open_files)",
            "LimitNOFILE=65536",
            "# The sandbox keeps the server's groups (no setgroups in a user namespace):",
            "# no SupplementaryGroups=. Left off, as bubblewrap needs what they take away:",
            "# RestrictNamespaces= (it makes user, mount, pid, net, ipc, uts and cgroup",
            "# namespaces), ProtectControlGroups= (it writes its cgroups), ProtectKernelTunables=,",
            "# ProtectKernelLogs=, ProtectProc=, ProcSubset= (the kernel refuses a new /proc",
            "# where parts of /proc are covered), PrivateUsers=, SystemCallFilter=.",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
        ]
        return "\n".join(lines) + "\n"

    def write(self, path: str | os.PathLike) -> Path:
        """Write the unit to `path` (0644, atomically)."""
        target = Path(path).expanduser().absolute()
        if target.is_dir():
            raise DomainError(f"--write {target} is a directory: name the unit file")
        return write_bytes_atomic(target, self.render().encode(), mode=0o644)
