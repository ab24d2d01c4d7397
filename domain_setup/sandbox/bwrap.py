"""The bubblewrap command line: what the sandbox sees and who it runs as.

Inside: an empty root (read-only), /usr and the interpreter (read-only, same paths
as outside, so a venv keeps working), the vetted packages and the runner's own
modules at ``/opt/pneumosyft``, a fresh /proc of its own pid namespace, a minimal
/dev, a size-limited tmpfs /tmp, no /etc, no home directories, no network, no
environment variables. Started by root, bwrap runs without a user namespace (so it
can bind paths under 0700 directories such as /root) and hands over to ``setpriv``,
which drops to nobody (65534) with no capabilities and no_new_privs. Started by
another user (a service's own), bwrap makes an unprivileged user namespace in which
that user is 65534 and nobody else exists; setpriv keeps the groups there (the kernel
denies setgroups in such a namespace), which the runner checks hold no other group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import PurePosixPath

from .errors import SandboxUnavailable
from .protocol import HELPER_PACKAGE, SANDBOX_ROOT

NOBODY = 65534
SETPRIV = "/usr/bin/setpriv"
SYSTEM_DIRS = ("/usr",)
SYSTEM_LINKS = ("/bin", "/lib", "/lib64")
HELPER_MODULES = ("errors.py", "plain_data.py", "protocol.py", "runner_main.py")
HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER_MAIN = f"{SANDBOX_ROOT}/{HELPER_PACKAGE}/runner_main.py"


@dataclass(frozen=True)
class Interpreter:
    """A Python to run inside: its path and the directories it needs (read-only)."""

    executable: str
    roots: tuple[str, ...]

    @classmethod
    def of(cls, python: str) -> "Interpreter":
        """Describe ``python``: for another interpreter, ask it for its prefixes."""
        if not os.path.isfile(python):
            raise SandboxUnavailable(f"python interpreter {python} not found")
        executable = os.path.join(os.path.realpath(os.path.dirname(python)),
                                  os.path.basename(python))
        if os.path.realpath(python) == os.path.realpath(sys.executable):
            prefixes = [sys.prefix, sys.base_prefix]
        else:
            try:
                out = subprocess.run([python, "-I", "-c", "import sys, json; "
                                      "print(json.dumps([sys.prefix, sys.base_prefix]))"],
                                     capture_output=True, text=True, timeout=60, check=True)
                prefixes = json.loads(out.stdout)
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                raise SandboxUnavailable(f"cannot query python {python}: {exc}") from None
        return cls(executable, tuple(dict.fromkeys(os.path.realpath(p) for p in prefixes)))


def _ancestors(path: str) -> list[str]:
    parents = list(PurePosixPath(path).parents)[:-1]  # drop "/"
    return [str(p) for p in reversed(parents)]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class _Mounts:
    """Collects bwrap mount arguments, creating every missing ancestor as a 0755 dir."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self.made: set[str] = {"/"}
        self.bound: list[str] = []

    def dirs_for(self, dest: str) -> None:
        for parent in _ancestors(dest):
            if parent not in self.made and not any(_under(parent, b) for b in self.bound):
                self.args += ["--perms", "0755", "--dir", parent]
                self.made.add(parent)

    def ro_bind(self, source: str, dest: str | None = None) -> None:
        dest = dest or source
        if dest == source and any(_under(dest, b) for b in self.bound):
            return  # already visible through an enclosing bind of the same path
        self.dirs_for(dest)
        self.args += ["--ro-bind", source, dest]
        self.bound.append(dest)
        self.made.add(dest)

    def system(self) -> None:
        for path in SYSTEM_DIRS:
            self.ro_bind(path)
        for path in SYSTEM_LINKS:
            if os.path.islink(path):
                self.args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                self.ro_bind(path)


def command(*, interpreter: Interpreter, vetted_packages: list[str], tmpfs_bytes: int,
            seccomp_fd: int, result_fd: int, bwrap: str = "bwrap",
            preload_torch: bool = True, user_namespace: bool = False) -> list[str]:
    """The full argv: bwrap with its mounts, then setpriv, then the runner, which moves
    ``result_fd`` (inherited through all three) to fd 3. ``user_namespace``: for a
    server that is not root (see the module's docstring)."""
    mounts = _Mounts()
    mounts.args += ["--proc", "/proc", "--dev", "/dev",
                    "--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", "/tmp"]
    mounts.made.update({"/proc", "/dev", "/tmp"})
    mounts.system()
    for root in sorted(interpreter.roots, key=len):
        mounts.ro_bind(root)
    for module in HELPER_MODULES:
        mounts.ro_bind(os.path.join(HERE, module), f"{SANDBOX_ROOT}/{HELPER_PACKAGE}/{module}")
    for package in vetted_packages:
        mounts.ro_bind(package, f"{SANDBOX_ROOT}/{os.path.basename(package)}")
    user = ("--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)) if user_namespace else ()
    return [
        bwrap, *user, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup", "--hostname", "pneumosyft-sandbox", "--die-with-parent",
        "--new-session", "--clearenv", *mounts.args, "--remount-ro", "/", "--chdir", "/tmp",
        "--seccomp", str(seccomp_fd), "--cap-drop", "ALL",
        "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",
        "--", SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}",
        "--keep-groups" if user_namespace else "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
        "--", interpreter.executable, "-I", "-B", RUNNER_MAIN, str(result_fd),
        *(() if preload_torch else ("--numpy-only",)),
    ]
