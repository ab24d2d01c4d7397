"""``Sandbox``: run one researcher function in a fresh bwrap sandbox, get plain data back.

Each run gets its own cgroup (memory and process limits), its own bwrap (fresh
mount, pid, network, IPC, UTS and cgroup namespaces, seccomp stage 1), and its own
interpreter that installs seccomp stage 2 before running the researcher's code.
Nothing survives a run: the cgroup is emptied with SIGKILL and removed before
``run`` returns or raises. Runs from several threads at once are fine.

With ``warm=True`` the sandbox keeps one spare started ahead: a fresh bwrap whose
runner has imported numpy and torch and waits for its request. It has seen no
request, code or data; it serves exactly one run and is killed with it, and the
next spare starts when that run ends. So a run skips the imports (about a second)
and still gets a sandbox nobody used before.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import io_pump, plain_data, protocol, seccomp_policy
from .bwrap import SETPRIV, Interpreter, command as bwrap_command
from .cgroups import CgroupHost, RunCgroup
from .errors import (PlainDataError, PlanError, PlanFailed, PlanOutOfMemory, PlanTimeout,
                     ResultRefused, SandboxCrashed, SandboxError, SandboxUnavailable)
from .limits import SandboxLimits

# Joins the run cgroup(s), then becomes bwrap (whose children inherit the cgroups).
LAUNCH_SCRIPT = """while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs" || exit 125; shift; done
shift
exec "$@"
"""
FIRST_FREE_FD = 10
CHILD_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class SandboxRun:
    """A successful run. Times are seconds from launch (a cold run) or from the
    hand-over of the request to a spare (``warm``): ``start_seconds`` until the runner
    started (cold: its main; warm: it had read the request), ``ready_seconds`` until the
    researcher's code started (numpy/torch imported); ``seconds`` is the whole run."""

    result: Any
    stdout: str
    stderr: str
    seconds: float
    start_seconds: float | None
    ready_seconds: float | None
    peak_memory_mb: float | None
    warm: bool = False


@dataclass(frozen=True)
class _Environment:
    bwrap: str
    cgroups: CgroupHost
    interpreter: Interpreter
    sandbox_bpf: bytes
    plan_bpf: str
    seccomp_syscall: int
    user_namespace: bool


@dataclass
class _Started:
    """A launched sandbox that has not yet been handed its request."""

    proc: subprocess.Popen
    cgroup: RunCgroup
    result_read: int
    launched: float

    def stop(self) -> None:
        Sandbox._stop(self.proc, self.cgroup)

    def release(self) -> None:
        """Kill everything in it and free its cgroup, pipes and fds."""
        self.stop()
        self.proc.wait()
        os.close(self.result_read)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except OSError:
                    pass
        self.cgroup.remove()


@dataclass
class _Outcome:
    exchange: io_pump.Exchange
    returncode: int
    started: float
    timed_out: bool
    oom: bool
    seconds: float
    peak_bytes: int | None
    warm: bool


def _high_fd(fd: int) -> int:
    """Move ``fd`` to a number >= 10 (close-on-exec), so fds 3-9 are free in the child."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, FIRST_FREE_FD)
    os.close(fd)
    return high


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("sandbox-seccomp", os.MFD_CLOEXEC)
    protocol.write_all(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _check_threads(torch_threads: int | None) -> None:
    if torch_threads is not None and (type(torch_threads) is not int or torch_threads < 1):
        raise SandboxError(f"torch_threads must be a positive integer, got {torch_threads!r}")


class Sandbox:
    """Runs researcher functions under ``limits`` in a bubblewrap sandbox.

    ``vetted_packages`` are directories (e.g. the project's ``common``) bound read-only
    at ``/opt/pneumosyft/<name>`` and importable inside; ``python`` is the interpreter
    run inside (its prefixes are bound read-only); ``torch_threads`` is passed to
    ``torch.set_num_threads``; ``preload_torch=False`` makes a light sandbox whose runner
    imports numpy only (plans without torch: the aggregation). ``bwrap`` and ``cgroup_parent`` (a cgroup path under
    which run cgroups are made; default: this process's cgroup) are for unusual hosts.
    """

    def __init__(self, limits: SandboxLimits | None = None, *, vetted_packages: Sequence[Path] = (),
                 python: str = sys.executable, torch_threads: int | None = None,
                 bwrap: str = "bwrap", cgroup_parent: str | None = None,
                 warm: bool = False, preload_torch: bool = True) -> None:
        self.limits = limits if limits is not None else SandboxLimits()
        if not isinstance(self.limits, SandboxLimits):
            raise SandboxError(f"limits must be SandboxLimits, got {type(limits).__name__}")
        _check_threads(torch_threads)
        self.vetted_packages = [self._vetted(Path(p)) for p in vetted_packages]
        names = [os.path.basename(p) for p in self.vetted_packages]
        if len(set(names)) != len(names):
            raise SandboxError(f"vetted packages with the same name: {names}")
        self.python = python
        self.torch_threads = torch_threads
        self.preload_torch = preload_torch
        self.bwrap = bwrap
        self.cgroup_parent = cgroup_parent
        self._lock = threading.Lock()
        self._env: _Environment | None = None
        self.warm = warm
        self._spare: _Started | None = None
        self._want_spare = threading.Condition(self._lock)
        self._closed = False
        self._warmer: threading.Thread | None = None
        self._launcher: ThreadPoolExecutor | None = None

    @staticmethod
    def _vetted(path: Path) -> str:
        real = os.path.realpath(path)
        name = os.path.basename(real)
        if not os.path.isdir(real):
            raise SandboxError(f"vetted package {path} is not a directory")
        if not name.isidentifier() or name == protocol.HELPER_PACKAGE:
            raise SandboxError(f"vetted package {path} has an unusable name {name!r}")
        return real

    # --- set-up ------------------------------------------------------------------

    def _environment(self) -> _Environment:
        with self._lock:
            if self._env is None:
                self._env = self._discover()
            return self._env

    def _discover(self) -> _Environment:
        found = shutil.which(self.bwrap)
        if found is None:
            raise SandboxUnavailable(f"bubblewrap ({self.bwrap}) not found: apt-get install bubblewrap")
        if not os.access(SETPRIV, os.X_OK):
            raise SandboxUnavailable(f"{SETPRIV} not found: apt-get install util-linux")
        user_namespace = os.geteuid() != 0  # a service's own user: see bwrap.py
        others = set(os.getgroups()) - {os.getegid()}
        if user_namespace and others:
            raise SandboxUnavailable(f"the server is in groups {sorted(others)} besides its own, "
                                     f"which a sandbox started without root would keep: run it "
                                     f"without them (systemd: no SupplementaryGroups=)")
        return _Environment(
            bwrap=os.path.realpath(found),
            cgroups=CgroupHost.detect(self.cgroup_parent),
            interpreter=Interpreter.of(self.python),
            sandbox_bpf=seccomp_policy.export_bpf(seccomp_policy.sandbox_filter()),
            plan_bpf=base64.b64encode(seccomp_policy.export_bpf(
                seccomp_policy.plan_filter())).decode("ascii"),
            seccomp_syscall=seccomp_policy.seccomp_syscall_number(),
            user_namespace=user_namespace)

    def check_available(self) -> SandboxRun:
        """Check bwrap, setpriv, cgroups and seccomp, then run a trivial function once.

        Raises ``SandboxUnavailable`` saying what to install or fix; returns the trivial run.
        """
        self._environment()
        try:
            run = self.run("def ping():\n    return 'pong'\n", "ping", {})
        except PlanError as exc:
            raise SandboxUnavailable(f"a trivial sandboxed run failed: {exc}") from None
        if run.result != "pong":
            raise SandboxUnavailable(f"a trivial sandboxed run returned {run.result!r}")
        return run

    # --- running -------------------------------------------------------------------

    def run(self, source: str, function: str, kwargs: Mapping[str, Any], *,
            max_result_bytes: int | None = None, torch_threads: int | None = None) -> SandboxRun:
        """Run ``function(**kwargs)`` from the module ``source`` in a fresh sandbox.

        ``kwargs`` is plain data (torch tensors allowed; they arrive as tensors).
        ``max_result_bytes`` (default: the limits' ``max_output_mb``, and never above it)
        bounds the encoded result: a larger one is refused by its size, from the frame's
        header, before any of it is read or decoded. ``torch_threads`` (default the
        sandbox's) is this run's share of the cores. Raises ``PlanTimeout``,
        ``PlanOutOfMemory``, ``PlanFailed``, ``ResultRefused`` or ``SandboxCrashed``;
        nothing of the run is left running afterwards.
        """
        request, bound = self._request(source, function, kwargs, max_result_bytes=max_result_bytes,
                                       torch_threads=torch_threads)
        spare = self._take_spare()
        started = spare or self._launch(self._environment())
        try:
            outcome = self._exchange(started, request, warm=spare is not None,
                                     max_result_bytes=bound)
        finally:
            started.release()
            self._refill()
        return self._interpret(outcome, bound)

    def session(self, runs: int) -> "SandboxSession":
        """A sandbox that serves up to `runs` runs, one after another, in one process: for
        a federated job's rounds, whose code is always the catalogue's (never the
        researcher's), so that a round does not pay a fresh interpreter's imports. Its
        limits are this sandbox's, per run (the CPU limit: `runs` runs' worth in all);
        anything going wrong in a run ends the session. It takes the warm spare when there
        is one (no request has reached it yet), else starts a sandbox."""
        if type(runs) is not int or runs < 1:
            raise SandboxError(f"runs must be a positive integer, got {runs!r}")
        spare = self._take_spare()  # a warm spare becomes the session (its runner learns
        if spare is not None:       # so from the first request), and another spare starts
            self._refill()
            return SandboxSession(self, spare, runs, warm=True)
        env = self._environment()
        with self._lock:  # bwrap's --die-with-parent follows the thread that started it:
            if self._launcher is None:  # a session outlives the request's thread
                self._launcher = ThreadPoolExecutor(max_workers=1,
                                                    thread_name_prefix="sandbox-sessions")
        started = self._launcher.submit(self._launch, env).result()
        return SandboxSession(self, started, runs)

    def _request(self, source: str, function: str, kwargs: Mapping[str, Any], *,
                 max_result_bytes: int | None, torch_threads: int | None,
                 session_runs: int | None = None) -> tuple[list[protocol.Chunk], int]:
        """The request's chunks for the runner, and the bound on its encoded result."""
        if not isinstance(source, str) or not isinstance(function, str) or not function.isidentifier():
            raise SandboxError("run takes the source (str) and a function name (identifier)")
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise SandboxError("kwargs must be a mapping with str keys")
        env = self._environment()
        bound = self.limits.max_output_bytes
        if max_result_bytes is not None:
            if type(max_result_bytes) is not int or max_result_bytes < 1:
                raise SandboxError(f"max_result_bytes must be a positive integer, got "
                                   f"{max_result_bytes!r}")
            bound = min(bound, max_result_bytes)
        _check_threads(torch_threads)
        request = protocol.request_parts(
            {"source": source, "function": function, "limits": self.limits.to_dict(),
             "max_result_bytes": bound, "session": session_runs is not None,
             "session_runs": session_runs or 1,
             "torch_threads": torch_threads or self.torch_threads, "plan_filter": env.plan_bpf,
             "seccomp_syscall": env.seccomp_syscall},
            plain_data.encode_parts(dict(kwargs), allow_tensors=True, name="kwargs"))
        return request, bound

    # --- the spare -------------------------------------------------------------------

    def prewarm(self) -> None:
        """Start the spare now (``warm`` sandboxes only) rather than after the first run."""
        self._refill()

    def close(self) -> None:
        """Kill the spare and stop making new ones."""
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
            self._want_spare.notify_all()
        if spare is not None:
            spare.release()

    def _take_spare(self) -> _Started | None:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.proc.poll() is not None:  # died waiting
            spare.release()
            return None
        return spare

    def _refill(self) -> None:
        if not self.warm:
            return
        with self._lock:
            if self._closed:
                return
            if self._warmer is None:
                # bwrap's --die-with-parent follows the thread that started it: spares are
                # started by this one long-lived thread, never by a request's thread
                self._warmer = threading.Thread(target=self._keep_spare, name="sandbox-warmer",
                                                daemon=True)
                self._warmer.start()
            self._want_spare.notify_all()

    def _keep_spare(self) -> None:
        env = self._environment()
        while True:
            with self._lock:
                while not self._closed and self._spare is not None:
                    self._want_spare.wait()
                if self._closed:
                    return
            try:
                spare = self._launch(env)
            except SandboxError:
                time.sleep(5)  # a failing host: the next run starts cold and says why
                continue
            with self._lock:
                if not self._closed and self._spare is None:
                    self._spare, spare = spare, None
            if spare is not None:
                spare.release()

    # --- one sandbox -------------------------------------------------------------------

    def _launch(self, env: _Environment) -> _Started:
        """Start a sandbox (cgroup, bwrap, runner), which imports and waits for its request
        (or, when that request opens a session, for one request after another)."""
        cgroup = env.cgroups.create(memory_bytes=self.limits.memory_bytes,
                                    max_processes=self.limits.max_processes)
        try:
            return self._start_in(env, cgroup)
        except BaseException:
            cgroup.kill()
            cgroup.remove()
            raise

    def _start_in(self, env: _Environment, cgroup: RunCgroup) -> _Started:
        result_read, result_write = os.pipe()
        result_write = _high_fd(result_write)
        seccomp_fd = _high_fd(_memfd(env.sandbox_bpf))
        argv = ["/bin/sh", "-c", LAUNCH_SCRIPT, "sh", *map(str, cgroup.dirs), "--",
                *bwrap_command(interpreter=env.interpreter, vetted_packages=self.vetted_packages,
                               tmpfs_bytes=self.limits.tmpfs_bytes, seccomp_fd=seccomp_fd,
                               result_fd=result_write, bwrap=env.bwrap,
                               preload_torch=self.preload_torch,
                               user_namespace=env.user_namespace)]
        launched = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, bufsize=0, env={"PATH": CHILD_PATH},
                                    pass_fds=(result_write, seccomp_fd), start_new_session=True)
        except OSError as exc:
            os.close(result_read)
            raise SandboxUnavailable(f"cannot start the sandbox: {exc}") from None
        finally:
            os.close(result_write)
            os.close(seccomp_fd)
        return _Started(proc, cgroup, result_read, launched)

    def _exchange(self, started: _Started, request: list[protocol.Chunk], *,
                  warm: bool, max_result_bytes: int, session: bool = False) -> _Outcome:
        """Hand the request to a started sandbox and collect what comes back; the run's
        clock (and its wall-clock limit) starts here. A session's sandbox is left running
        when its answer came back whole and in time."""
        proc, cgroup = started.proc, started.cgroup
        handed = time.monotonic()
        deadline = handed + self.limits.timeout_seconds
        timed_out = answered = False
        try:
            exchange = io_pump.exchange(
                stdin=proc.stdin, stdout=proc.stdout, stderr=proc.stderr,
                result_fd=started.result_read, request=request, deadline=deadline,
                max_log_bytes=self.limits.max_log_bytes,
                max_result_bytes=max_result_bytes, session=session)
            timed_out = exchange.timed_out
            answered = session and exchange.frames.finished and not timed_out \
                and exchange.frames.violation is None
            if timed_out or exchange.frames.violation:
                started.stop()
            if not answered:
                try:
                    proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
                except subprocess.TimeoutExpired:
                    timed_out = True
        finally:
            if not answered:
                started.stop()
                proc.wait()
        exchange.finish_feeding()
        # a cold run counts from the launch, a warm one from the hand-over
        origin = handed if warm else started.launched
        return _Outcome(exchange, proc.returncode, origin, timed_out, cgroup.oom_killed(),
                        time.monotonic() - origin, cgroup.peak_memory_bytes(), warm)

    @staticmethod
    def _stop(proc: subprocess.Popen, cgroup: RunCgroup) -> None:
        cgroup.kill()
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # --- results ---------------------------------------------------------------------

    def _interpret(self, outcome: _Outcome, max_result_bytes: int) -> SandboxRun:
        exchange, limits = outcome.exchange, self.limits
        logs = {"stdout": exchange.stdout.text(), "stderr": exchange.stderr.text()}
        if outcome.timed_out:
            raise PlanTimeout(f"plan exceeded its {limits.timeout_seconds:g} s wall-clock limit "
                              f"and was killed", **logs)
        if outcome.oom:
            raise PlanOutOfMemory(f"plan exceeded its {limits.memory_mb} MB memory limit and "
                                  f"was killed", **logs)
        if exchange.frames.violation:
            raise ResultRefused(f"result refused: {exchange.frames.violation}", **logs)
        timing: dict[str, float] = {}
        final = []
        for kind, payload in exchange.frames.frames:
            if kind == protocol.TIMING:
                report = self._report(payload, logs)
                if isinstance(report.get("t"), float):
                    timing[str(report.get("event"))] = report["t"] - outcome.started
            else:
                final.append((kind, payload))
        if len(final) > 1:
            raise ResultRefused("result refused: more than one result on the result channel", **logs)
        if not final:
            raise self._crash(outcome, logs)
        kind, payload = final[0]
        if kind == protocol.ERROR:
            raise self._error(self._report(payload, logs), logs)
        try:
            value = plain_data.decode(payload, max_bytes=max_result_bytes)
        except PlainDataError as exc:
            raise ResultRefused(f"result refused: {exc}", **logs) from None
        peak = outcome.peak_bytes / 2**20 if outcome.peak_bytes is not None else None
        start = timing.get("request" if outcome.warm else "main")
        return SandboxRun(value, logs["stdout"], logs["stderr"], outcome.seconds,
                          start, timing.get("ready"), peak, outcome.warm)

    @staticmethod
    def _report(payload: bytearray, logs: dict[str, str]) -> dict[str, Any]:
        try:
            report = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            report = None
        if not isinstance(report, dict):
            raise ResultRefused("result refused: malformed report on the result channel", **logs)
        return report

    def _error(self, report: dict[str, Any], logs: dict[str, str]) -> PlanError:
        stage, kind, message, trace = (str(report.get(key, ""))[:10_000]
                                       for key in ("stage", "type", "message", "traceback"))
        if stage == "plan" and kind == "MemoryError":
            return PlanOutOfMemory(f"plan ran out of memory (MemoryError: {message})", **logs)
        if stage == "plan":
            return PlanFailed(f"plan raised {kind}: {message}", exc_type=kind, exc_message=message,
                              traceback=trace, **logs)
        if stage == "result":
            return ResultRefused(f"result refused: {message}", **logs)
        return SandboxCrashed(f"sandbox setup failed: {kind}: {message}", **logs)

    def _crash(self, outcome: _Outcome, logs: dict[str, str]) -> PlanError:
        code = outcome.returncode
        if code == 128 + signal.SIGXCPU:
            return PlanTimeout(f"plan exceeded its {self.limits.cpu_seconds} s CPU-time limit "
                               f"and was killed", **logs)
        last = (logs["stderr"].strip().splitlines() or [""])[-1][:300]
        try:
            what = f"was killed by {signal.Signals(-code if code < 0 else code - 128).name}"
        except ValueError:
            what = f"exited with status {code}"
        if code in (-signal.SIGKILL, 128 + signal.SIGKILL):
            what += f" (is SIGXCPU ignored? the {self.limits.cpu_seconds} s CPU limit then kills)"
        return SandboxCrashed(f"sandbox {what} without a result" + (f": {last}" if last else ""),
                              **logs)


class SandboxSession:
    """One sandbox serving several runs in turn (`Sandbox.session`); close it when done.

        with sandbox.session(runs=20) as session:
            for weights in rounds:
                run = session.run(source, "plan", dict(inputs, initial_weights=weights))
    """

    def __init__(self, sandbox: Sandbox, started: _Started, runs: int, *, warm: bool = False):
        self.sandbox, self.runs_left, self._warm = sandbox, runs, warm
        self._started: _Started | None = started
        self._lock = threading.Lock()
        self._runs = runs

    @property
    def alive(self) -> bool:
        """Can the session serve another run?"""
        return (self._started is not None and self._started.proc.poll() is None
                and self.runs_left > 0)

    def run(self, source: str, function: str, kwargs: Mapping[str, Any], *,
            max_result_bytes: int | None = None, torch_threads: int | None = None) -> SandboxRun:
        """Like `Sandbox.run`, in this session's sandbox (SandboxError once it is closed
        or used up). A run that fails in any way closes the session."""
        with self._lock:
            if not self.alive:
                raise SandboxError("the sandbox session is closed or used up")
            request, bound = self.sandbox._request(
                source, function, kwargs, max_result_bytes=max_result_bytes,
                torch_threads=torch_threads, session_runs=self._runs)
            started = self._started
            first = self.runs_left == self._runs
            self.runs_left -= 1
            try:
                outcome = self.sandbox._exchange(started, request, warm=self._warm or not first,
                                                 max_result_bytes=bound, session=True)
                run = self.sandbox._interpret(outcome, bound)
            except BaseException:
                self.close()
                raise
            if self.runs_left == 0 or started.proc.poll() is not None:
                self.close()
            return run

    def close(self) -> None:
        """Kill the sandbox and free its cgroup (idempotent)."""
        started, self._started = self._started, None
        if started is not None:
            started.release()

    def __enter__(self) -> "SandboxSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
