"""The domain as an unprivileged service: the systemd unit `service` writes, and a real
domain run the way that unit runs it (a user of its own, a delegated cgroup, the unit's
hardening emulated) whose sandbox still holds the containment tests' memory and fork bombs.

The live domain runs as the system user `pneumosyft-test` (created if missing, kept),
from a launcher that, as root, does what systemd does for the unit: a mount namespace
with / read-only but the state directory (ProtectSystem=strict), a private /tmp, /root
and /home hidden (ProtectHome=; only the interpreter this machine keeps under /root stays
visible), a cgroup chowned to the user as Delegate=yes does, then setpriv to the user
with no capabilities and no_new_privs. The admin's commands run as the service user too
(in the server's mount namespace, where its interpreter is), as the README says: run as
root, they would leave root's files in the state directory. The researcher is this test
process.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.errors import DomainError
from conftest import ACCOUNTS_YAML, RESEARCHER, SMALL_SET
from demos.local_domain import TRUSTED, LocalDomain, free_port
from domain_setup import PROJECT_ROOT
from domain_setup.admin.cli import main as cli_main
from domain_setup.admin.lifecycle import is_healthy
from domain_setup.admin.service import ServiceUnit
from domain_setup.sandbox.cgroups import NAME_PREFIX, SERVER_LEAF, CgroupHost
from scientist import connect
from test_sandbox_domain import allocate_3gb, approved_run

SERVICE_USER = "pneumosyft-test"
PLAN_MEMORY_MB = 1024
START_SECONDS = 240
SETPRIV = "/usr/bin/setpriv"


# -- the unit ------------------------------------------------------------------------------

def unit_keys(text: str) -> dict[str, dict[str, str]]:
    """The unit file's sections and keys (comment lines skipped, a key given once)."""
    sections: dict[str, dict[str, str]] = {}
    section = None
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert section is not None and key not in section, line
        section[key] = value
    return sections


def exec_words(value: str) -> list[str]:
    """ExecStart= as systemd splits it: quoted words, then its % and $ un-doubled."""
    return [word.replace("%%", "%").replace("$$", "$") for word in shlex.split(value)]


def verify_with_systemd(path: Path) -> None:
    """`systemd-analyze verify` must accept the unit without a word (when installed)."""
    if shutil.which("systemd-analyze") is None:
        return
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_the_unit_runs_the_domain_as_its_user_with_its_cgroups_delegated(tmp_path):
    name = "St Mary 100% \"Pneumonia\" $HOME"
    unit = ServiceUnit.of(user="pneumosyft", state_dir="/var/lib/pneumosyft/st-mary",
                          port=8081, host="127.0.0.1",
                          start_args=["--", "--name", name, "--plan-memory-mb", "2048"])
    text = unit.render()
    keys = unit_keys(text)
    service = keys["Service"]
    assert (service["User"], service["Group"]) == ("pneumosyft", "pneumosyft")
    assert service["WorkingDirectory"] == str(PROJECT_ROOT)
    assert exec_words(service["ExecStart"]) == [
        unit.python.as_posix(), "-m", "domain_setup", "start", "--foreground",
        "--state-dir", "/var/lib/pneumosyft/st-mary", "--host", "127.0.0.1", "--port", "8081",
        "--name", name, "--plan-memory-mb", "2048"]
    assert service["Delegate"] == "yes" and service["Restart"] == "on-failure"
    assert service["OOMPolicy"] == "continue"
    assert service["StateDirectory"] == "pneumosyft/st-mary"
    assert service["StateDirectoryMode"] == "0700" and service["UMask"] == "0077"
    assert service["NoNewPrivileges"] == "yes" and service["CapabilityBoundingSet"] == ""
    assert service["ProtectSystem"] == "strict" and service["PrivateTmp"] == "yes"
    # what bubblewrap needs must stay off
    for key in ("RestrictNamespaces", "ProtectControlGroups", "ProtectKernelTunables",
                "PrivateUsers", "SystemCallFilter", "SupplementaryGroups", "ProtectProc"):
        assert key not in service, key
    assert keys["Install"] == {"WantedBy": "multi-user.target"}
    header = [line for line in text.splitlines() if line.startswith("#   ")]
    assert header[0].startswith("#   useradd --system --user-group") \
        and header[0].endswith(" pneumosyft")
    assert "#   systemctl enable --now pneumosyft.service" in header
    path = tmp_path / "pneumosyft.service"
    path.write_text(text)
    verify_with_systemd(path)


def test_a_state_directory_outside_var_lib_is_made_writable_and_created_by_the_admin(tmp_path):
    state = tmp_path / "srv-state"
    text = ServiceUnit.of(user="pneumosyft", state_dir=state).render()
    service = unit_keys(text)["Service"]
    assert service["ReadWritePaths"] == str(state) and "StateDirectory" not in service
    assert f"#   install -d -m 0700 -o pneumosyft -g pneumosyft {state}" in text.splitlines()
    assert "--port" not in exec_words(service["ExecStart"])  # the port the state remembers


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = cli_main(list(args))
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_print_systemd_and_write_give_the_same_unit(tmp_path, capsys):
    args = ["service", "--state-dir", str(tmp_path / "state"), "--user", "pneumosyft",
            "--port", "8081"]
    code, printed, _ = run_cli(capsys, *args, "--print-systemd", "--", "--plan-timeout", "30")
    assert code == 0 and "--plan-timeout 30" in unit_keys(printed)["Service"]["ExecStart"]
    target = tmp_path / "pneumosyft.service"
    code, out, _ = run_cli(capsys, *args, "--write", str(target), "--", "--plan-timeout", "30")
    assert code == 0 and out.strip() == f"wrote {target}"
    assert target.read_text() == printed and (target.stat().st_mode & 0o777) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pneumosyft.service"]  # no temp left


@pytest.mark.parametrize("args, message", [
    (["--user", "root"], "error: --user root is root: the service runs as an unprivileged user"),
    (["--user", "Ada Lovelace"], "error: invalid --user 'Ada Lovelace'"),
    (["--port", "443"], "error: --port 443 is outside 1024-65535"),
    (["--host", "a host"], "error: invalid --host 'a host'"),
    (["--state-dir", "/srv/pneumo syft"], "error: state directory '/srv/pneumo syft' cannot go"),
    (["--", "--foreground"], "error: --foreground is set by the unit itself"),
    (["--", "--state-dir=/elsewhere"], "error: --state-dir is set by the unit itself"),
    (["--", "--name", "line\nbreak"], "error: start option 'line\\nbreak' holds a control"),
    (["--", "--no-such-option"], "error: unrecognized arguments: --no-such-option"),
], ids=["root", "user-name", "port", "host", "path", "foreground", "state-dir", "newline",
        "unknown-start-option"])
def test_bad_inputs_get_one_line_and_write_nothing(tmp_path, capsys, args, message):
    target = tmp_path / "pneumosyft.service"
    code, out, err = run_cli(capsys, "service", "--write", str(target), *args)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code != 0 and len(errors) == 1 and message in errors[0], err
    assert out == "" and not target.exists()


def test_a_write_into_a_missing_directory_or_onto_a_directory_is_one_line(tmp_path, capsys):
    for target, message in ((tmp_path / "missing" / "x.service", "does not exist"),
                            (tmp_path, "is a directory")):
        code, _, err = run_cli(capsys, "service", "--write", str(target))
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 1 and len(errors) == 1 and message in errors[0], err


# -- a live domain as the service user --------------------------------------------------------

def fork_and_thread_bomb(images):
    """test_sandbox's fork and thread bomb, as an approved plan."""
    import os
    import threading
    forks = 0
    for _ in range(100):
        try:
            if os.fork() == 0:
                os._exit(0)
            forks += 1
        except OSError:
            pass
    release = threading.Event()
    threads, error = [], None
    try:
        while len(threads) < 10_000:
            thread = threading.Thread(target=release.wait)
            thread.start()
            threads.append(thread)
    except RuntimeError as exc:
        error = str(exc)
    release.set()
    for thread in threads:
        thread.join()
    return {"ran": True, "uid": os.getuid(), "forks": forks, "started": len(threads),
            "error": error}


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def service_user() -> tuple[int, int]:
    """The service's system user (created once, kept: useradd is not undone here)."""
    try:
        return _ids(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--home-dir", "/nonexistent",
                        "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
                       capture_output=True, timeout=60)  # a concurrent run may win: look again
        return _ids(SERVICE_USER)


def skip_reason() -> str | None:
    """Why this machine cannot run a domain as another user, if it cannot."""
    if os.geteuid() != 0:
        return "needs root to create the service user and delegate a cgroup to it"
    closed = unreachable(SERVICE_PATHS)
    if closed:
        return closed
    for tool in ("bwrap", "unshare", "nsenter", "useradd", SETPRIV):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    uid, gid = service_user()
    probe = subprocess.run([SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--",
                            "bwrap", "--unshare-user", "--ro-bind", "/", "/", "--",
                            "/usr/bin/true"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"no unprivileged user namespaces here: {probe.stderr.strip()[:200]}"
    return None


def delegate_cgroups(uid: int, gid: int) -> list[Path]:
    """What systemd's Delegate=yes does: a cgroup of the service's own (in each hierarchy
    the sandbox uses, under this process's), chowned to the user with its control files."""
    name = f"pneumosyft-service-test-{os.getpid()}"
    made = []
    for parent in CgroupHost.detect().parents:
        directory = parent / name
        directory.mkdir()
        made.append(directory)
        os.chown(directory, uid, gid)
        for control in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "tasks",
                        "cgroup.clone_children", "notify_on_release"):
            if (directory / control).exists():
                os.chown(directory / control, uid, gid)
    return made


HIDDEN = (Path("/tmp"), Path("/root"), Path("/home"))  # PrivateTmp=, ProtectHome=


def _hidden_but(paths: list[Path]) -> list[str]:
    """Shell lines: /tmp (PrivateTmp=), /root and /home (ProtectHome=) become empty, but
    for `paths` under them (the project, what the venv links to), which stay where they are,
    under directories the service user may enter. A path closed to others itself (a clone
    in `mktemp -d`) comes back as an open directory holding its entries."""
    kept: list[tuple[Path, Path]] = []  # (what, where it goes back)
    for path in paths:
        if not any(hidden in path.parents for hidden in HIDDEN):
            continue
        if path.stat().st_mode & 0o005 == 0o005:
            kept.append((path, path))
        else:
            kept += [(entry, entry) for entry in sorted(path.iterdir())]
    lines = ["mount -t tmpfs -o mode=0755 tmpfs /mnt"]  # a staging place, this namespace's
    for index, (what, _) in enumerate(kept):
        kind = "mkdir -p" if what.is_dir() else "touch"
        lines.append(f"{kind} /mnt/{index} && mount --bind {shlex.quote(str(what))} /mnt/{index}")
    lines.append("mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp")
    for home in HIDDEN[1:]:
        if home.is_dir():
            lines.append(f"mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs {home}")
    for index, (what, where) in enumerate(kept):
        place = shlex.quote(str(where))
        make = f"mkdir -p {place}" if what.is_dir() else \
            f"mkdir -p {shlex.quote(str(where.parent))} && touch {place}"
        lines.append(f"{make} && mount --move /mnt/{index} {place}")
    return lines


def unreachable(paths: list[Path]) -> str | None:
    """Where the service user could not enter a directory on the way to one of `paths`
    (outside /tmp and the homes, which the launcher recreates enterable), else None."""
    for path in paths:
        if any(hidden in path.parents for hidden in HIDDEN):
            continue
        for parent in [*reversed(path.parents), path]:
            if not parent.stat().st_mode & 0o001:
                return f"{parent} is closed to other users, and {path} lies under it"
    return None


SERVICE_PATHS = [PROJECT_ROOT, Path(sys.base_prefix).resolve()]  # the code, the interpreter


def launcher(state: Path, cgroups: list[Path], uid: int, gid: int, start: list[str]) -> list[str]:
    """The argv that starts `start` the way the unit would (see the module's docstring)."""
    script = [
        "set -e",
        *_hidden_but(SERVICE_PATHS),
        f"mount --bind {state} {state}",  # ReadWritePaths= / StateDirectory=
        # ProtectSystem=strict: every other mount read-only but the API file systems
        "for mount in $(awk '$6 !~ /^ro/ {print $5}' /proc/self/mountinfo); do",
        f"  case $mount in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|/tmp|{state}) ;;",
        "    *) mount -o remount,bind,ro \"$mount\" ;; esac",
        "done",
        *(f"echo $$ > {directory}/cgroup.procs" for directory in cgroups),
        f"cd {PROJECT_ROOT}",
        # User=, Group=, NoNewPrivileges=yes, CapabilityBoundingSet= and a clean environment
        f"exec {SETPRIV} --reuid={uid} --regid={gid} --clear-groups --inh-caps=-all "
        f"--bounding-set=-all --no-new-privs -- env -i PATH=/usr/bin:/bin HOME=/nonexistent "
        f"LANG=C.UTF-8 USER={SERVICE_USER} LOGNAME={SERVICE_USER} OMP_NUM_THREADS=1 "
        + shlex.join(start),
    ]
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
            "\n".join(script)]


def processes_of(uid: int) -> dict[int, str]:
    """Every live process whose real uid is `uid`: pid -> its command line and cgroups.
    Zombies are left out: a killed sandbox's bwrap whose parent died first is reparented
    to pid 1, which reaps it when it will (this machine's, lazily; systemd, at once)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            if int(status.split("\nUid:\t", 1)[1].split()[0]) == uid \
                    and "\nState:\tZ" not in status:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found[int(entry.name)] = f"{command[:200]}\n{(entry / 'cgroup').read_text()}"
        except (OSError, IndexError, ValueError):
            continue
    return found


def as_service_user(server_pid: int, uid: int, gid: int) -> list[str]:
    """The prefix that runs a command as the service user, as the server sees the files."""
    # cd there, not --wd: nsenter opens --wd's directory before it enters the namespace
    return ["nsenter", f"--target={server_pid}", "--mount", "--", "/bin/sh", "-c",
            f'cd {shlex.quote(str(PROJECT_ROOT))} && exec "$@"', "sh", SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", "env", "-i",
            "PATH=/usr/bin:/bin", "HOME=/nonexistent", "LANG=C.UTF-8"]


class ServiceAdmin(LocalDomain):
    """The admin's CLI, run as the service user (`runuser -u USER -- python -m
    domain_setup ...` on a real host)."""

    def __init__(self, state_dir: Path, prefix: list[str]):
        super().__init__(state_dir)
        self.prefix = prefix

    def cli(self, *args: str) -> str:
        done = subprocess.run([*self.prefix, sys.executable, "-m", "domain_setup", *args,
                               "--state-dir", str(self.state.root)], cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise DomainError(f"`domain_setup {' '.join(args)}` failed: "
                              f"{(done.stderr or done.stdout).strip()[-500:]}")
        return done.stdout


def stop_by_pid(pid: int, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after `timeout`; waits for the process to be gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    """Running (a zombie has exited: its parent, maybe this test, has yet to reap it)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


class ServiceDomain:
    """The live domain: its LocalDomain (for the admin CLI), server process, user, cgroups."""

    def __init__(self, domain: ServiceAdmin, server: subprocess.Popen, uid: int,
                 cgroups: list[Path], log: Path):
        self.domain, self.server, self.uid, self.cgroups, self.log = \
            domain, server, uid, cgroups, log

    def strays(self) -> dict[int, str]:
        """The user's processes that are neither the server nor in one of its run cgroups
        below the delegated cgroup."""
        runs = f"/{self.cgroups[0].name}/{NAME_PREFIX}{self.server.pid}-"
        return {pid: cgroup for pid, cgroup in processes_of(self.uid).items()
                if pid != self.server.pid and runs not in cgroup}


@pytest.fixture(scope="module")
def service_domain(tmp_path_factory):
    """A domain started as the service user, as the unit starts it; removed afterwards."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    uid, gid = service_user()
    root = tmp_path_factory.mktemp("service")
    state = Path(f"/var/lib/pneumosyft-service-test-{os.getpid()}")
    state.mkdir(mode=0o700)
    os.chown(state, uid, gid)
    cgroups, server = [], None
    try:
        cgroups = delegate_cgroups(uid, gid)
        unit = ServiceUnit.of(user=SERVICE_USER, state_dir=state, port=free_port(),
                              start_args=["--name", "Service General", *TRUSTED,
                                          "--plan-memory-mb", str(PLAN_MEMORY_MB)])
        log = root / "server.log"
        with open(log, "wb") as out:
            server = subprocess.Popen(launcher(state, cgroups, uid, gid, unit.exec_start()),
                                      stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        domain = ServiceAdmin(state, as_service_user(server.pid, uid, gid))
        deadline = time.monotonic() + START_SECONDS
        while not (domain.state.connection_path.exists() and is_healthy(domain.url)):
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise DomainError(f"the service's domain did not come up: {tail}")
            time.sleep(0.5)
        domain.cli("upload", "synthetic", "--name", "xray", *SMALL_SET)
        domain.cli("accounts", "apply", str(ACCOUNTS_YAML))
        ada = connect(connection_file=domain.researcher_file(RESEARCHER))
        yield ServiceDomain(domain, server, uid, cgroups, log), ada
    finally:
        if server is not None:
            stop_by_pid(server.pid)
            server.wait()
        for pid in processes_of(uid):  # none should be left (asserted below)
            if any(str(pid) in (c / "cgroup.procs").read_text().split() for c in cgroups):
                stop_by_pid(pid, timeout=5)
        for directory in cgroups:
            for run in directory.glob(f"{NAME_PREFIX}*"):
                remove_cgroup(run)
            if (directory / SERVER_LEAF).is_dir():
                remove_cgroup(directory / SERVER_LEAF)
            remove_cgroup(directory)
        shutil.rmtree(state, ignore_errors=True)


def remove_cgroup(path: Path, timeout: float = 15) -> None:
    """Remove a cgroup the test made once it is empty: a sandbox's process killed with its
    server a moment ago may still be listed while it exits (EBUSY); any left is stopped by
    its pid."""
    import errno

    deadline = time.monotonic() + timeout
    while True:
        for pid in (path / "cgroup.procs").read_text().split():
            stop_by_pid(int(pid), timeout=2)
        try:
            path.rmdir()
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_server_runs_as_the_service_user_in_its_delegated_cgroup(service_domain):
    live, _ = service_domain
    status = Path(f"/proc/{live.server.pid}/status").read_text()
    assert f"\nUid:\t{live.uid}\t{live.uid}\t{live.uid}\t{live.uid}\n" in status
    assert "\nNoNewPrivs:\t1\n" in status and "\nCapBnd:\t0000000000000000\n" in status
    for directory in live.cgroups:  # v2: in the leaf below, where it moved itself
        procs = [leaf / "cgroup.procs" for leaf in (directory, directory / SERVER_LEAF)
                 if (leaf / "cgroup.procs").exists()]
        assert any(str(live.server.pid) in path.read_text().split() for path in procs)
    # the warm spares: bubblewrap in a user namespace, so the service user outside
    assert len(processes_of(live.uid)) > 1 and live.strays() == {}


def test_a_memory_bomb_is_killed_by_its_cgroup_and_the_domain_goes_on(service_domain):
    live, ada = service_domain
    with pytest.raises(DomainError, match="memory"):
        approved_run(live.domain, ada, allocate_3gb)
    audit = live.domain.cli("audit", "--action", "execution", "--json").splitlines()
    executions = [e for e in map(json.loads, audit)
                  if e.get("function", "").startswith("allocate_3gb")]
    assert executions and f"{PLAN_MEMORY_MB} MB memory limit" in str(executions[-1]), executions
    assert is_healthy(live.domain.url) and live.server.poll() is None
    assert live.strays() == {}


def test_a_fork_and_thread_bomb_is_bounded_by_the_pids_cgroup(service_domain):
    live, ada = service_domain
    out = approved_run(live.domain, ada, fork_and_thread_bomb)
    assert out["ran"] and out["uid"] == 65534 and out["forks"] == 0
    assert 0 < out["started"] < 64 and out["error"] == "can't start new thread"  # max_processes
    assert is_healthy(live.domain.url) and live.strays() == {}


def test_status_sees_the_service_domain_and_its_state_is_all_the_users(service_domain):
    live, _ = service_domain
    out = live.domain.cli("status")
    assert f"pid {live.server.pid}, healthy" in out
    state = live.domain.state.root
    assert [path for path in state.rglob("*") if path.lstat().st_uid != live.uid] == []


def test_root_may_not_run_a_command_on_the_services_state_directory(tmp_path, capsys):
    """A root-owned tokens.json in a service's state directory locks the domain out: the
    CLI refuses, in one line, before it writes anything."""
    if os.geteuid() != 0:
        pytest.skip("only root can hand a directory to another user")
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 999, 999)
    assert cli_main(["token", "list", "--state-dir", str(state)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "run the command as that user (runuser -u" in error
    assert list(state.iterdir()) == []
