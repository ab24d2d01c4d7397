"""One fresh cgroup per run: memory and pids limits, OOM detection, kill everything.

Supports cgroup v1 (separate ``memory`` and ``pids`` hierarchies) and v2 (one
unified hierarchy), detected at run time from /proc/self/cgroup and
/proc/self/mountinfo. Run cgroups are created under the server's own cgroup (or
``parent``, a cgroup path such as ``/system.slice/pneumosyft.service/sandboxes``)
and are named ``pneumosyft-sandbox-<uuid>``.

With v2, a cgroup that holds processes cannot enable controllers for its children (the
"no internal processes" rule): a server in a delegated cgroup of its own (a systemd
service with ``Delegate=yes``) moves itself into the leaf ``pneumosyft-domain`` below
it, and its runs' cgroups are that leaf's siblings.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from common.processes import pid_alive

from .errors import SandboxUnavailable

NAME_PREFIX = "pneumosyft-sandbox-"
SERVER_LEAF = "pneumosyft-domain"
_V2_CONTROLLERS = ("memory", "pids")


def _read(path: Path) -> str:
    return path.read_text(encoding="ascii", errors="replace")


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(value)


def _keyed(path: Path, key: str) -> int | None:
    """The value of ``key N`` in a flat keyed file (memory.events, memory.oom_control)."""
    try:
        for line in _read(path).splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def _mounts() -> dict[str, tuple[str, Path]]:
    """Controller ("memory", "pids", or "" for v2) -> (mount root, mount point)."""
    mounts: dict[str, tuple[str, Path]] = {}
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, point, fstype = fields[3], Path(fields[4].replace("\\040", " ")), tail[0]
        if fstype == "cgroup2":
            mounts.setdefault("", (root, point))
        elif fstype == "cgroup":
            for option in tail[2].split(","):
                if option in _V2_CONTROLLERS:
                    mounts.setdefault(option, (root, point))
    return mounts


def _own_cgroups() -> dict[str, str]:
    """Controller ("memory", "pids", or "" for v2) -> this process's cgroup path."""
    paths: dict[str, str] = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _join(mount: tuple[str, Path], path: str) -> Path:
    root, point = mount
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    return point / path.lstrip("/")


@dataclass(frozen=True)
class CgroupHost:
    """Where run cgroups are created: v1 has a memory and a pids parent, v2 one parent."""

    version: int
    parents: tuple[Path, ...]

    @classmethod
    def detect(cls, parent: str | None = None) -> "CgroupHost":
        """Find writable parents for run cgroups; ``SandboxUnavailable`` says what is missing."""
        try:
            mounts, own = _mounts(), _own_cgroups()
        except (OSError, ValueError) as exc:
            raise SandboxUnavailable(f"cannot read this process's cgroups: {exc}") from None
        if "memory" in mounts and "memory" in own:
            if "pids" not in mounts or "pids" not in own:
                raise SandboxUnavailable("cgroup v1 without a pids hierarchy: mount the pids "
                                         "controller (needed for the process limit)")
            host = cls(1, tuple(dict.fromkeys(
                _join(mounts[c], parent or own[c]) for c in _V2_CONTROLLERS)))
        elif "" in mounts and "" in own:
            path = parent or own[""]
            if parent is None and path.rsplit("/", 1)[-1] == SERVER_LEAF:
                path = path.rsplit("/", 1)[0] or "/"  # moved into its leaf already
            host = cls(2, (_join(mounts[""], path),))
            host._enable_v2_controllers(move_self=parent is None)
        else:
            raise SandboxUnavailable("no memory cgroup found: the sandbox needs cgroup v1 or v2 "
                                     "with the memory and pids controllers")
        for directory in host.parents:
            if not os.access(directory, os.W_OK):
                raise SandboxUnavailable(f"cgroup {directory} is not writable: run the server "
                                         f"as root or delegate this cgroup to it")
        return host

    def _enable_v2_controllers(self, *, move_self: bool) -> None:
        """Enable memory and pids for run cgroups; ``move_self``: when this process's own
        cgroup refuses because processes live in it, move this process into the leaf
        ``SERVER_LEAF`` below it and try again (others still there make it fail)."""
        control = self.parents[0] / "cgroup.subtree_control"
        try:
            enabled = _read(control).split()
            missing = " ".join(f"+{c}" for c in _V2_CONTROLLERS if c not in enabled)
            if missing:
                try:
                    _write(control, missing)
                except OSError as exc:
                    if exc.errno != errno.EBUSY or not move_self:
                        raise
                    leaf = self.parents[0] / SERVER_LEAF
                    leaf.mkdir(exist_ok=True)
                    _write(leaf / "cgroup.procs", str(os.getpid()))
                    _write(control, missing)
        except OSError as exc:
            raise SandboxUnavailable(
                f"cannot enable the memory and pids controllers in {control} ({exc.strerror}): "
                f"give the server a delegated cgroup without processes of its own and pass "
                f"it as cgroup_parent") from None

    def create(self, *, memory_bytes: int, max_processes: int) -> "RunCgroup":
        """Create a fresh run cgroup with the given memory and process limits."""
        name = f"{NAME_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"  # which process made it
        run = RunCgroup(self.version, name, tuple(parent / name for parent in self.parents))
        try:
            for directory in run.dirs:
                directory.mkdir()
            run.apply(memory_bytes=memory_bytes, max_processes=max_processes)
        except OSError as exc:
            run.remove()
            raise SandboxUnavailable(f"cannot set up cgroup {name}: {exc}") from None
        return run


@dataclass(frozen=True)
class RunCgroup:
    """The cgroup(s) of one run. ``dirs`` are what the launcher joins."""

    version: int
    name: str
    dirs: tuple[Path, ...]

    def _file(self, name: str) -> Path:
        for directory in self.dirs:
            if (directory / name).exists():
                return directory / name
        return self.dirs[0] / name

    def apply(self, *, memory_bytes: int, max_processes: int) -> None:
        """Write the limits (v1: limit_in_bytes, memsw; v2: memory.max, no swap, OOM group)."""
        if self.version == 1:
            _write(self._file("memory.limit_in_bytes"), str(memory_bytes))
            if self._file("memory.memsw.limit_in_bytes").exists():
                _write(self._file("memory.memsw.limit_in_bytes"), str(memory_bytes))
        else:
            _write(self._file("memory.max"), str(memory_bytes))
            for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                if self._file(name).exists():
                    _write(self._file(name), value)
        _write(self._file("pids.max"), str(max_processes))

    def procs(self) -> set[int]:
        """Processes still in the run cgroup."""
        pids: set[int] = set()
        for directory in self.dirs:
            try:
                pids.update(int(pid) for pid in _read(directory / "cgroup.procs").split())
            except FileNotFoundError:
                pass
        return pids

    def kill(self, *, timeout: float = 10.0) -> None:
        """SIGKILL everything in the cgroup and wait until it is empty."""
        if self.version == 2 and self._file("cgroup.kill").exists():
            _write(self._file("cgroup.kill"), "1")
        deadline = time.monotonic() + timeout
        while pids := self.procs():
            for pid in pids:
                self._kill_member(pid)
            if time.monotonic() > deadline:
                raise SandboxUnavailable(f"processes {sorted(pids)} survived SIGKILL in {self.name}")
            time.sleep(0.005)

    def _kill_member(self, pid: int) -> None:
        """Kill ``pid`` through a pidfd, after checking it is still ours (no pid-reuse race)."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        except OSError as exc:  # kernels before 5.3: no pidfds, plain kill
            if exc.errno != errno.ENOSYS:
                raise
            os.kill(pid, signal.SIGKILL)
            return
        try:
            if self.name in _read(Path(f"/proc/{pid}/cgroup")):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except (ProcessLookupError, FileNotFoundError):
            pass
        finally:
            os.close(pidfd)

    def oom_killed(self) -> bool:
        """Did the kernel's OOM killer kill a process of this run?"""
        if self.version == 2:
            return bool(_keyed(self._file("memory.events"), "oom_kill"))
        kills = _keyed(self._file("memory.oom_control"), "oom_kill")
        if kills is not None:
            return kills > 0
        try:
            return int(_read(self._file("memory.failcnt"))) > 0
        except (OSError, ValueError):
            return False

    def peak_memory_bytes(self) -> int | None:
        """Peak memory use of the run, when the kernel records it."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int(_read(self._file(name)))
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        """Remove the (empty) run cgroup directories; retried while the kernel drains them."""
        for directory in self.dirs:
            for attempt in range(400):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or attempt == 399:
                        raise SandboxUnavailable(f"cannot remove cgroup {directory}: {exc}") from None
                    time.sleep(0.005)


def _maker_pid(name: str) -> int | None:
    """The pid of the process that made a run cgroup (``pneumosyft-sandbox-<pid>-<uuid>``)."""
    head = name[len(NAME_PREFIX):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def remove_leftovers(host: CgroupHost) -> int:
    """Kill and remove the run cgroups whose maker process no longer exists (a server
    killed with -9 leaves its spares' and runs' cgroups behind); the number removed.
    Cgroups of live processes, and names without a pid, are left alone."""
    names = sorted({d.name for parent in host.parents for d in parent.glob(f"{NAME_PREFIX}*")
                    if d.is_dir()})
    removed = 0
    for name in names:
        pid = _maker_pid(name)
        if pid is None or pid_alive(pid):
            continue
        run = RunCgroup(host.version, name, tuple(parent / name for parent in host.parents
                                                   if (parent / name).is_dir()))
        run.kill()
        run.remove()
        removed += 1
    return removed
