"""The researcher-code sandbox, with real bubblewrap, cgroups and seccomp (no mocks).

Every attack runs inside the sandbox and returns what it saw (``{"ran": True, ...}``,
``os.getuid()``, the error it got), so a crash can never pass for containment.
After every test, no sandbox process and no run cgroup may be left.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import json
import math
import os
import pickle
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from domain_setup.sandbox import (LimitsError, PlainDataError, PlanFailed,  # noqa: E402
                                  PlanOutOfMemory, PlanTimeout, ResultNotPlainData,
                                  ResultRefused, Sandbox, SandboxError, SandboxLimits,
                                  SandboxUnavailable,
                                  decode, encode)
from domain_setup.sandbox import plain_data, seccomp_policy  # noqa: E402
from domain_setup.sandbox.bwrap import RUNNER_MAIN  # noqa: E402
from domain_setup.sandbox.cgroups import NAME_PREFIX, CgroupHost  # noqa: E402

LIMITS = SandboxLimits(timeout_seconds=60, memory_mb=1024, cpu_seconds=120, tmpfs_mb=16,
                       max_processes=32, max_output_mb=8, max_log_kb=16)
SECRET = "pneumosyft-secret-" + base64.b16encode(os.urandom(8)).decode()
TORCH_THREADS = 2


def make_sandbox(**changes) -> Sandbox:
    limits = SandboxLimits.from_mapping({**LIMITS.to_dict(), **changes})
    return Sandbox(limits, vetted_packages=[PROJECT_ROOT / "common"], torch_threads=TORCH_THREADS)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    box = make_sandbox()
    box.check_available()
    return box


def run(box: Sandbox, source: str, function: str = "main", **kwargs):
    """Run ``function(**kwargs)`` from ``source`` (dedented) and return the SandboxRun."""
    return box.run(textwrap.dedent(source), function, kwargs)


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descends_from_this_process(pid: int) -> bool:
    me = os.getpid()
    while pid > 1:
        pid = _parent(pid)
        if pid == me:
            return True
    return False


def sandbox_processes() -> list[str]:
    """Command lines of every sandbox runner or bwrap that this test process started and
    that is still alive (the warm spares of domains other tests started are not ours)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if RUNNER_MAIN in cmdline and _descends_from_this_process(int(entry.name)):
            found.append(f"{entry.name}: {cmdline}")
    return found


def run_cgroups() -> list[Path]:
    """Run cgroups this process made and left (an rmdir'ed cgroup was empty)."""
    mine = f"{NAME_PREFIX}{os.getpid()}-*"
    return [path for parent in CgroupHost.detect().parents for path in parent.glob(mine)]


@pytest.fixture(autouse=True)
def nothing_left_running():
    yield
    assert sandbox_processes() == []
    assert run_cgroups() == []


# --- who and where the code runs ------------------------------------------------------

def test_runs_as_nobody_without_capabilities_under_both_seccomp_stages(sandbox):
    out = run(sandbox, """
        import os, torch
        def main():
            status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
                          if ":\\t" in line)
            return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
                    "groups": os.getgroups(), "status": status, "threads": torch.get_num_threads()}
    """).result
    assert (out["uid"], out["euid"], out["gid"], out["groups"]) == (65534, 65534, 65534, [])
    status = out["status"]
    for cap in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert int(status[cap], 16) == 0, cap
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2" and status["Seccomp_filters"].strip() == "2"
    assert out["threads"] == TORCH_THREADS


def test_environment_is_empty_and_secrets_absent(sandbox, monkeypatch):
    monkeypatch.setenv("PNEUMOSYFT_SECRET", SECRET)
    out = run(sandbox, """
        import os
        def main():
            return {"ran": True, "environ": dict(os.environ),
                    "proc_environ": open("/proc/self/environ", "rb").read()}
    """).result
    assert out["ran"]
    assert set(out["environ"]) <= {"PWD", "LC_CTYPE"}
    assert SECRET not in json.dumps(out["environ"]) and SECRET.encode() not in out["proc_environ"]


def test_state_dir_checkout_etc_and_homes_are_invisible(sandbox, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    key = state / "signing.key"
    key.write_text(SECRET)
    key.chmod(0o600)
    readme = (PROJECT_ROOT / "README.md").resolve()
    targets = [str(key), str(state), str(readme), str(PROJECT_ROOT / "domain_setup"),
               str(PROJECT_ROOT / "policies"), "/etc/passwd", "/etc/shadow", "/home",
               "/root/.bash_history", str(Path.home() / ".ssh")]
    out = run(sandbox, """
        import os
        def main(targets, checkout):
            seen = {}
            for path in targets:
                try:
                    with open(path, "rb") as handle:
                        seen[path] = "READ " + repr(handle.read(100))
                except OSError as exc:
                    seen[path] = type(exc).__name__
            return {"ran": True, "seen": seen, "root": sorted(os.listdir("/")),
                    "checkout": sorted(os.listdir(checkout)) if os.path.isdir(checkout) else None}
    """, targets=targets, checkout=str(PROJECT_ROOT)).result
    assert out["ran"]
    for path, what in out["seen"].items():
        assert what in ("FileNotFoundError", "PermissionError", "NotADirectoryError",
                        "IsADirectoryError"), f"{path}: {what}"
        assert not what.startswith("READ"), path
    assert "etc" not in out["root"] and "home" not in out["root"]
    if out["checkout"] is not None:  # only the venv's path may be visible in the checkout
        assert set(out["checkout"]) <= {".venv"}, out["checkout"]


def test_proc_shows_only_the_sandbox(sandbox, monkeypatch):
    monkeypatch.setenv("PNEUMOSYFT_SECRET", SECRET)
    out = run(sandbox, """
        import os
        def main():
            pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            cmdlines = {}
            for pid in pids:
                try:
                    cmdlines[str(pid)] = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ")
                except OSError as exc:
                    cmdlines[str(pid)] = repr(exc).encode()
            try:
                environ = open("/proc/1/environ", "rb").read()
            except OSError as exc:
                environ = repr(exc).encode()
            return {"me": os.getpid(), "pids": pids, "cmdlines": cmdlines, "environ": environ}
    """).result
    assert out["me"] <= 3 and len(out["pids"]) <= 3, out["pids"]
    everything = b" ".join(out["cmdlines"].values()) + out["environ"]
    assert b"pytest" not in everything and SECRET.encode() not in everything
    assert b"PermissionError" in out["environ"] or b"PNEUMOSYFT" not in out["environ"]


def test_vetted_package_is_importable_but_not_the_rest_of_the_project(sandbox):
    out = run(sandbox, """
        import importlib, sys
        def main():
            found = {}
            for name in ("common", "domain_setup", "scientist", "syft_patches"):
                try:
                    found[name] = importlib.import_module(name).__file__
                except ImportError as exc:
                    found[name] = type(exc).__name__
            return {"ran": True, "found": found, "path": sys.path}
    """).result
    assert out["found"]["common"] == "/opt/pneumosyft/common/__init__.py"
    for name in ("domain_setup", "scientist", "syft_patches"):
        assert out["found"][name] == "ModuleNotFoundError"
    assert str(PROJECT_ROOT) not in out["path"]


# --- the file system ------------------------------------------------------------------

def test_writes_outside_tmp_fail(sandbox):
    site = Path(torch.__file__).parent.parent
    targets = ["/x", "/usr/x", "/opt/pneumosyft/x", "/opt/pneumosyft/common/x",
               f"{site}/evil.pth", f"{sys.base_prefix}/x", "/dev/shm/x", "/proc/sys/kernel/hostname",
               "/dev/x"]
    out = run(sandbox, """
        def main(targets):
            results = {}
            for path in targets + ["/tmp/allowed"]:
                try:
                    with open(path, "w") as handle:
                        handle.write("x")
                    results[path] = "written"
                except OSError as exc:
                    results[path] = exc.errno
            return results
    """, targets=targets).result
    assert out.pop("/tmp/allowed") == "written"
    for path, result in out.items():
        assert result in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOENT), f"{path}: {result}"
    assert not (site / "evil.pth").exists()


def test_tmpfs_and_file_size_limits():
    source = """
        def main(chunk_mb):
            written = 0
            try:
                with open("/tmp/fill", "wb") as handle:
                    while written < 256 * 2**20:
                        handle.write(b"x" * (chunk_mb * 2**20))
                        handle.flush()
                        written += chunk_mb * 2**20
            except OSError as exc:
                return {"ran": True, "written": written, "errno": exc.errno}
            return {"ran": True, "written": written, "errno": None}
    """
    tmpfs = run(make_sandbox(tmpfs_mb=8, max_file_mb=64), source, chunk_mb=1).result
    assert tmpfs["errno"] == errno.ENOSPC and 4 * 2**20 <= tmpfs["written"] <= 8 * 2**20
    fsize = run(make_sandbox(tmpfs_mb=64, max_file_mb=2), source, chunk_mb=1).result
    assert fsize["errno"] == errno.EFBIG and fsize["written"] == 2 * 2**20


# --- network, processes, seccomp ------------------------------------------------------

def test_no_network_even_to_a_loopback_listener(sandbox):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        out = run(sandbox, """
            import socket
            def main(port):
                errors = {}
                try:
                    socket.socket()
                except OSError as exc:
                    errors["socket"] = exc.errno
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=3)
                except OSError as exc:
                    errors["connect"] = exc.errno
                try:
                    socket.socketpair()
                except OSError as exc:
                    errors["socketpair"] = exc.errno
                return {"ran": True, "errors": errors}
        """, port=port).result
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    assert out["errors"] == {"socket": errno.EPERM, "connect": errno.EPERM, "socketpair": errno.EPERM}


def test_ctypes_syscalls_are_filtered_not_just_python(sandbox):
    out = run(sandbox, """
        import ctypes, os
        def main():
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            def call(name, *args):
                ctypes.set_errno(0)
                result = getattr(libc, name)(*args)
                return [result, ctypes.get_errno()]
            return {"uid": os.getuid(),
                    "socket": call("socket", 2, 1, 0),
                    "raw_socket": call("syscall", 41, 2, 1, 0),          # SYS_socket
                    "fork": call("fork"),
                    "raw_clone": call("syscall", 56, 17, 0, 0, 0, 0),     # clone(SIGCHLD)
                    "raw_vfork": call("syscall", 58),
                    "unshare": call("unshare", 0x10000000),               # CLONE_NEWUSER
                    "ptrace": call("ptrace", 16, 1, 0, 0),                # PTRACE_ATTACH pid 1
                    "personality": call("personality", 0x0040000),        # ADDR_NO_RANDOMIZE
                    "personality_query": call("personality", 0xffffffff),
                    "personality_default": call("personality", 0),
                    "clone3": call("syscall", 435, 0, 0)}
    """).result
    assert out.pop("uid") == 65534
    assert out.pop("clone3") == [-1, errno.ENOSYS]
    assert out.pop("personality_query")[0] == out.pop("personality_default")[0] == 0
    for name, (result, err) in out.items():
        assert (result, err) == (-1, errno.EPERM), name


def test_no_subprocess_fork_exec_or_system(sandbox):
    out = run(sandbox, """
        import os, subprocess, threading
        def attempt(action):
            try:
                return {"returned": repr(action())}
            except OSError as exc:
                return {"errno": exc.errno}
        def main():
            box = []
            thread = threading.Thread(target=lambda: box.append("thread ran"))
            thread.start(); thread.join()
            return {"ran": True, "thread": box,
                    "subprocess": attempt(lambda: subprocess.run(["/bin/true"])),
                    "fork": attempt(os.fork),
                    "execv": attempt(lambda: os.execv("/bin/true", ["true"])),
                    "posix_spawn": attempt(lambda: os.posix_spawn("/bin/true", ["true"], {})),
                    "system": os.system("echo pwned > /tmp/pwned"),
                    "pwned": os.path.exists("/tmp/pwned"),
                    "true_exists": os.path.exists("/bin/true")}
    """).result
    assert out["thread"] == ["thread ran"] and out["true_exists"]
    for name in ("subprocess", "fork", "execv", "posix_spawn"):
        assert out[name] == {"errno": errno.EPERM}, name
    assert out["system"] != 0 and not out["pwned"]


class _Shell:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/pwned",))


def test_malicious_pickles_do_not_run_commands(sandbox):
    buffer = io.BytesIO()
    torch.save({"model": _Shell()}, buffer)
    out = run(sandbox, """
        import io, os, pickle, torch
        def main(payload, torch_payload):
            with open("/tmp/control", "w") as handle:   # /tmp is writable: the command could have
                handle.write("ok")
            found = {"ran": True}
            found["pickle"] = pickle.loads(payload)
            found["after_pickle"] = os.path.exists("/tmp/pwned")
            found["torch"] = torch.load(io.BytesIO(torch_payload), weights_only=False)
            found["after_torch"] = os.path.exists("/tmp/pwned")
            found["control"] = open("/tmp/control").read()
            return found
    """, payload=pickle.dumps(_Shell()), torch_payload=buffer.getvalue()).result
    assert out["control"] == "ok"
    # os.system was called by both loads (a non-zero status: it could not start a shell)
    assert out["pickle"] != 0 and out["torch"]["model"] != 0
    assert not out["after_pickle"] and not out["after_torch"]


def _load_filter_and_probe(program: bytes) -> dict:
    """Load a raw BPF program into a fresh python (no sandbox) and probe a few syscalls."""
    probe = textwrap.dedent("""
        import ctypes, json, os, socket, subprocess, sys, threading
        program = sys.stdin.buffer.read()
        libc = ctypes.CDLL(None, use_errno=True)
        class Prog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
        buf = ctypes.create_string_buffer(program, len(program))
        prog = Prog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
        assert libc.prctl(38, 1, 0, 0, 0) == 0                       # PR_SET_NO_NEW_PRIVS
        assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0      # PR_SET_SECCOMP, FILTER
        def attempt(action):
            try:
                action()
                return "ok"
            except OSError as exc:
                return exc.errno
        def fork():
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        box = []
        thread = threading.Thread(target=lambda: box.append(1)); thread.start(); thread.join()
        print(json.dumps({"socket": attempt(socket.socket), "fork": attempt(fork),
                          "exec": attempt(lambda: subprocess.run(["/bin/true"], check=True)),
                          "thread": box == [1],
                          "seccomp": open("/proc/self/status").read().count("Seccomp:\\t2")}))
    """)
    done = subprocess.run([sys.executable, "-I", "-c", probe], input=program,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def test_exported_seccomp_programs_load_and_filter():
    stage1 = _load_filter_and_probe(seccomp_policy.export_bpf(seccomp_policy.sandbox_filter()))
    assert stage1 == {"socket": errno.EPERM, "fork": "ok", "exec": "ok", "thread": True, "seccomp": 1}
    stage2 = _load_filter_and_probe(seccomp_policy.export_bpf(seccomp_policy.plan_filter()))
    assert stage2 == {"socket": errno.EPERM, "fork": errno.EPERM, "exec": errno.EPERM,
                      "thread": True, "seccomp": 1}


# --- resource limits --------------------------------------------------------------------

def test_infinite_loop_is_killed_by_the_wall_clock_and_the_next_run_works():
    # a warm spare, so that the clock measures the loop: a cold start's imports alone
    # took over 4 s on a loaded 2-core machine, and the loop never ran
    with spare_ready(timeout_seconds=6) as box:  # closed with its next spare
        with pytest.raises(PlanTimeout) as caught:
            run(box, LOOP_FOREVER)
    assert str(caught.value) == "plan exceeded its 6 s wall-clock limit and was killed"
    assert "looping" in caught.value.stdout  # the loop really ran
    assert sandbox_processes() == [] and run_cgroups() == []
    # the next run, with the usual wall clock: a cold start (numpy and torch imported)
    # alone can take 4 s on a loaded 2-core machine
    assert run(make_sandbox(), "import os\ndef main():\n    return os.getpid()\n").result == 2


def test_cpu_time_limit():
    with pytest.raises(PlanTimeout) as caught:
        run(make_sandbox(cpu_seconds=3), """
            def main():
                print("spinning", flush=True)
                while True:
                    pass
        """)
    assert str(caught.value) == "plan exceeded its 3 s CPU-time limit and was killed"
    assert "spinning" in caught.value.stdout


def test_large_input_output_and_logs_at_once_do_not_deadlock():
    images = torch.randint(0, 256, (1600, 1, 256, 256), dtype=torch.uint8)  # 105 MB
    done = run(make_sandbox(max_output_mb=64, max_log_kb=64), """
        import sys
        def main(images):
            for i in range(3000):
                print("line", i, "x" * 100)
                sys.stderr.write("e" * 100 + "\\n")
            return {"first": int(images[0].sum()), "echo": images[:800].numpy()}
    """, images=images)
    assert done.result["first"] == int(images[0].sum())
    assert np.array_equal(done.result["echo"], images[:800].numpy())
    assert "more bytes dropped" in done.stdout and "more bytes dropped" in done.stderr
    print(f"[sandbox] 105 MB in, 52 MB out: {done.seconds:.2f} s "
          f"(researcher code started at {done.ready_seconds:.2f} s)")


def test_memory_bomb_is_out_of_memory():
    with pytest.raises(PlanOutOfMemory) as caught:
        run(make_sandbox(memory_mb=512), """
            import numpy as np
            def main():
                print("allocating 3 GB", flush=True)
                block = np.ones(3 * 2**30, dtype=np.uint8)
                return int(block[-1])
        """)
    assert "512 MB memory limit" in str(caught.value)
    assert "allocating 3 GB" in caught.value.stdout


def test_fork_and_thread_bombs_are_bounded(sandbox):
    out = run(sandbox, """
        import os, threading
        def main():
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
            return {"ran": True, "forks": forks, "started": len(threads), "error": error}
    """).result
    assert out["ran"] and out["forks"] == 0
    assert 0 < out["started"] < LIMITS.max_processes
    assert out["error"] == "can't start new thread"


def test_logs_are_bounded(sandbox):
    done = run(sandbox, """
        import sys
        def main():
            print("x" * 100_000)
            sys.stderr.write("y" * 100_000)
            return "printed"
    """)
    assert done.result == "printed"
    for text, char in ((done.stdout, "x"), (done.stderr, "y")):
        assert text.startswith(char * LIMITS.max_log_bytes) and "more bytes dropped" in text
        assert len(text) < LIMITS.max_log_bytes + 200


# --- results and errors -----------------------------------------------------------------

@pytest.mark.parametrize("body, message", [
    ("import torch\ndef main():\n    return {'w': torch.ones(2)}\n", "tensor.detach().numpy()"),
    ("def main():\n    return {'model': object()}\n", "not plain data"),
    ("import numpy as np\ndef main():\n    return np.zeros(9 * 2**20, np.uint8)\n",
     "exceeds the 8388608-byte output limit"),
    ("import os, struct\ndef main():\n    os.write(3, struct.pack('<cQ', b'R', 10**12))\n"
     "    return 1\n", "exceeds the 8 MB output limit"),
    ("import os, struct\ndef main():\n    os.write(3, struct.pack('<cQ', b'R', 5) + b'abcde')\n"
     "    os._exit(0)\n", "malformed plain data"),
], ids=["tensor", "object", "too-large", "forged-frame", "garbage-frame"])
def test_results_that_are_not_plain_data_are_refused(sandbox, body, message):
    with pytest.raises(ResultRefused) as caught:
        sandbox.run(body, "main", {})
    assert message in str(caught.value)


def test_researcher_exception_is_plan_failed(sandbox):
    with pytest.raises(PlanFailed) as caught:
        run(sandbox, """
            def helper(rate):
                raise ValueError(f"bad learning rate {rate}\\nsecond line")
            def main(rate):
                print("about to fail")
                helper(rate)
        """, rate=5)
    failure = caught.value
    assert str(failure) == "plan raised ValueError: bad learning rate 5"
    assert (failure.exc_type, failure.exc_message) == ("ValueError", "bad learning rate 5")
    assert 'File "<plan>"' in failure.traceback and "raise ValueError" in failure.traceback
    assert "runner_main" not in failure.traceback and "about to fail" in failure.stdout


def test_no_state_survives_between_runs(sandbox):
    first = run(sandbox, """
        import builtins, os, sys, numpy, torch, common
        def main():
            torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: o * 0)
            torch.pwned = numpy.pwned = common.pwned = builtins.pwned = True
            sys.modules["pwned"] = sys
            open("/tmp/state", "w").write("left behind")
            return {"ran": True, "pid": os.getpid(),
                    "zeroed": float(torch.nn.Linear(2, 2)(torch.ones(2)).abs().sum())}
    """).result
    assert first["ran"] and first["zeroed"] == 0.0  # the hook was active in the first run
    second = run(sandbox, """
        import builtins, os, sys, numpy, torch, common
        def main():
            return {"hooks": len(torch.nn.modules.module._global_forward_hooks),
                    "attrs": [hasattr(m, "pwned") for m in (torch, numpy, common, builtins)],
                    "module": "pwned" in sys.modules, "file": os.path.exists("/tmp/state"),
                    "output": float(torch.nn.Linear(2, 2, bias=True)(torch.ones(2)).abs().sum())}
    """).result
    assert second == {"hooks": 0, "attrs": [False] * 4, "module": False, "file": False,
                      "output": second["output"]}
    assert second["output"] > 0


def test_small_torch_training_step_returns_numpy_weights(sandbox):
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    labels = np.random.default_rng(0).integers(0, 2, 64)
    done = run(sandbox, """
        import torch
        from torch import nn
        def train(images, labels, steps):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(4 * 13 * 13, 2))
            optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
            x, y = images.float() / 255, torch.from_numpy(labels)
            losses = []
            for _ in range(steps):
                optimiser.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
            return {"input": [type(images).__name__, str(images.dtype)], "losses": losses,
                    "weights": {k: v.detach().numpy() for k, v in model.state_dict().items()}}
    """, "train", images=images, labels=labels, steps=5)
    out = done.result
    assert out["input"] == ["Tensor", "torch.uint8"]
    assert len(out["losses"]) == 5 and all(math.isfinite(x) for x in out["losses"])
    assert out["losses"][-1] != out["losses"][0]
    shapes = {k: (v.dtype, v.shape) for k, v in out["weights"].items()}
    assert shapes == {"0.weight": (np.float32, (4, 1, 3, 3)), "0.bias": (np.float32, (4,)),
                      "4.weight": (np.float32, (2, 676)), "4.bias": (np.float32, (2,))}
    assert done.peak_memory_mb is None or done.peak_memory_mb > 50


def test_concurrent_runs_from_several_threads(sandbox):
    results, errors = {}, []

    def worker(number):
        try:
            results[number] = run(sandbox, "import os\ndef main(n):\n    return [n, os.getpid()]\n",
                                  n=number).result
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and results == {n: [n, 2] for n in range(3)}


def test_start_cost(sandbox, capsys):
    runs = [run(sandbox, "def main():\n    return None\n") for _ in range(3)]
    with spare_ready() as box:
        warm = run(box, "def main():\n    return None\n")
    with capsys.disabled():
        for done in runs:
            print(f"\n[sandbox start cost] cold: launch->runner main {done.start_seconds:.3f} s, "
                  f"launch->researcher code {done.ready_seconds:.3f} s (numpy+torch imported), "
                  f"whole trivial run {done.seconds:.3f} s, peak {done.peak_memory_mb} MB")
        print(f"[sandbox start cost] warm spare: hand-over->researcher code "
              f"{warm.ready_seconds:.3f} s, whole trivial run {warm.seconds:.3f} s")
    assert all(0 < done.start_seconds < done.ready_seconds < done.seconds for done in runs)
    assert not any(done.warm for done in runs) and warm.warm


# --- a warm spare: started ahead, used once ---------------------------------------------

def warm_sandbox(**changes) -> Sandbox:
    limits = SandboxLimits.from_mapping({**LIMITS.to_dict(), **changes})
    return Sandbox(limits, vetted_packages=[PROJECT_ROOT / "common"], torch_threads=TORCH_THREADS,
                   warm=True)


def wait_for_spare(box: Sandbox, seconds: float = 120) -> None:
    """Wait until the spare's runner is up (under a loaded suite, a start can take long)."""
    def runners() -> list[str]:
        # the interpreter itself: not the launcher shell or bwrap, whose command lines name
        # it too (the shell execs bwrap, which starts it: counting the shell raced)
        return [line for line in sandbox_processes()
                if os.path.basename(line.split()[1]).startswith("python")]

    deadline = time.monotonic() + seconds
    found = runners()
    while time.monotonic() < deadline and not found:
        time.sleep(0.05)
        found = runners()
    assert len(found) == 1, sandbox_processes()  # one spare, never more
    time.sleep(2)  # numpy and torch imported, waiting for its request


@contextlib.contextmanager
def spare_ready(**changes) -> Iterator[Sandbox]:
    """A warm sandbox (`warm_sandbox(**changes)`) whose spare is up; closed, spares and
    all, on the way out."""
    box = warm_sandbox(**changes)
    try:
        box.prewarm()
        wait_for_spare(box)
        yield box
    finally:
        box.close()


LOOP_FOREVER = textwrap.dedent("""
    def main():
        print("looping", flush=True)
        while True:
            pass
""")


def test_a_warm_spare_serves_one_run_and_nothing_it_ran_survives():
    with spare_ready() as box:
        planted = run(box, """
            import builtins, sys, torch
            def main():
                torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: o * 0)
                torch.pwned = builtins.pwned = True
                open("/tmp/state", "w").write("left behind")
                return {"ran": True, "modules_before": "__plan__" in sys.modules}
        """)
        assert planted.warm and planted.result == {"ran": True, "modules_before": True}
        wait_for_spare(box)  # the next spare, started when that run ended
        second = run(box, """
            import builtins, os, torch
            def main():
                return {"hooks": len(torch.nn.modules.module._global_forward_hooks),
                        "attrs": [hasattr(m, "pwned") for m in (torch, builtins)],
                        "file": os.path.exists("/tmp/state")}
        """)
        assert second.warm and second.result == {"hooks": 0, "attrs": [False, False],
                                                 "file": False}
        assert 0 <= second.start_seconds <= second.ready_seconds <= second.seconds
    assert sandbox_processes() == []


def test_a_warm_run_gets_its_whole_wall_clock_and_is_still_bounded():
    with spare_ready(timeout_seconds=3, memory_mb=512) as box:
        time.sleep(2)  # the spare waited longer than the timeout: the clock had not started
        assert run(box, "def main():\n    return 'on time'\n").result == "on time"
        wait_for_spare(box)
        with pytest.raises(PlanTimeout) as caught:
            run(box, LOOP_FOREVER)
        assert "looping" in caught.value.stdout
        wait_for_spare(box)
        with pytest.raises(PlanOutOfMemory) as caught:
            run(box, """
                def main():
                    print("allocating", flush=True)
                    blocks = []
                    while True:
                        blocks.append(bytearray(64 * 1024 * 1024))
            """)
        assert "allocating" in caught.value.stdout
    assert sandbox_processes() == [] and run_cgroups() == []


def test_check_available_fails_clearly_without_bwrap():
    box = Sandbox(LIMITS, vetted_packages=[], bwrap="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable) as caught:
        box.check_available()
    assert str(caught.value) == ("bubblewrap (/nonexistent/bwrap) not found: "
                                 "apt-get install bubblewrap")


# --- limits -------------------------------------------------------------------------------

def test_limits_validation_and_description():
    limits = SandboxLimits.from_mapping({"timeout_seconds": 30, "memory_mb": 2048})
    assert limits.describe().startswith("timeout 30 s, memory 2048 MB, CPU 3600 s")
    with pytest.raises(LimitsError, match="unknown sandbox limit 'memory_gb'"):
        SandboxLimits.from_mapping({"memory_gb": 2})
    with pytest.raises(LimitsError, match="memory_mb must be an integer"):
        SandboxLimits(memory_mb="2048")
    with pytest.raises(LimitsError, match="timeout_seconds must be between"):
        SandboxLimits(timeout_seconds=math.inf)
    with pytest.raises(LimitsError, match="max_processes must be between 8"):
        SandboxLimits(max_processes=2)


# --- plain data -----------------------------------------------------------------------------

def assert_same(left, right, path="value"):
    """Exact equality: same types all the way down, nan == nan, arrays by dtype/shape/bytes."""
    assert type(left) is type(right), f"{path}: {type(left)} != {type(right)}"
    if isinstance(left, dict):
        assert list(left) == list(right), path
        for key in left:
            assert_same(left[key], right[key], f"{path}[{key!r}]")
    elif isinstance(left, (list, tuple)):
        assert len(left) == len(right), path
        for i, (a, b) in enumerate(zip(left, right)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(left, np.ndarray):
        assert (left.dtype, left.shape) == (right.dtype, right.shape), path
        assert left.tobytes() == right.tobytes(), path
    elif isinstance(left, float):
        assert struct.pack("<d", left) == struct.pack("<d", right) or (math.isnan(left) and math.isnan(right)), path
    else:
        assert left == right, path


EVERYTHING = {
    "none": None, "bools": [True, False], "ints": [0, -1, 2**63, -(2**200)],
    "floats": [0.1, -0.0, 1e308, 5e-324, math.nan, math.inf, -math.inf],
    "str": "héllo \u2603 \ud800", "bytes": b"\x00\xff" * 10, "empty": ["", b"", [], (), {}],
    "tuple": (1, (2, [3, (4,)])), "nested": {"a": {"b": {"c": [1, {"d": None}]}}},
    "arrays": [np.arange(24, dtype=dtype).reshape(2, 3, 4)
               for dtype in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                             np.uint32, np.uint64, np.float16, np.float32, np.float64)]
              + [np.array([True, False]), np.zeros((0, 3), np.float32), np.array(2.5),
                 np.arange(4, dtype=">i4"), np.random.default_rng(1).integers(0, 255, (4, 1, 8, 8), dtype=np.uint8)],
}


def test_plain_data_round_trips_every_supported_type_exactly():
    assert_same(decode(encode(EVERYTHING), max_bytes=1 << 20), EVERYTHING)
    scalars = decode(encode([np.float32(0.5), np.int64(-3), np.uint8(7), np.bool_(True)]),
                     max_bytes=1 << 20)
    assert_same(scalars, [0.5, -3, 7, True])
    strided = np.arange(20.0)[::3]
    assert_same(decode(encode(strided), max_bytes=1 << 20), strided.copy())
    tensor = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    back = decode(encode({"t": tensor}, allow_tensors=True), max_bytes=1 << 20, allow_tensors=True)
    assert torch.equal(back["t"], tensor)
    writable = decode(bytearray(encode(np.zeros(3))), max_bytes=1 << 20)
    writable[0] = 1.0  # decoding a bytearray gives writable, zero-copy arrays


def _raw(text: bytes) -> bytes:
    """A plain-data prefix and ``text`` as the header."""
    return plain_data._PREFIX.pack(plain_data.MAGIC, plain_data.VERSION, len(text)) + text


def _plain(header: dict, *buffers: bytes) -> bytes:
    """Hand-craft plain data (for malformed headers)."""
    out = _raw(json.dumps(header).encode())
    for buffer in buffers:
        out += bytes(-len(out) % plain_data.ALIGN) + buffer
    return out


def test_plain_data_refuses_malformed_truncated_and_oversized_input():
    data = encode({"a": np.arange(10, dtype=np.int32), "b": [1, "x", b"y", (2.5,)]})
    for cut in range(len(data)):  # every truncation is a clean PlainDataError
        with pytest.raises(PlainDataError):
            decode(data[:cut], max_bytes=1 << 20)
    rng = np.random.default_rng(2)
    for _ in range(300):  # flipped bytes: a clean error or a value, never another exception
        corrupt = bytearray(data)
        corrupt[rng.integers(len(corrupt))] ^= int(rng.integers(1, 256))
        try:
            decode(corrupt, max_bytes=1 << 20)
        except PlainDataError:
            pass
    array = {"$": "array", "dtype": "<i4", "shape": [2], "buf": 0}
    cases = {
        "exceeds the 10-byte limit": (data, 10),
        "bad magic": (b"XXXX" + data[4:], None),
        "trailing bytes": (data + b"\0", None),
        "array dtype '|O'": (_plain({"root": dict(array, dtype="|O"), "buffers": [8]}, bytes(8)), None),
        "array dtype '|V8'": (_plain({"root": dict(array, dtype="|V8"), "buffers": [8]}, bytes(8)), None),
        "array of shape [3]": (_plain({"root": dict(array, shape=[3]), "buffers": [8]}, bytes(8)), None),
        "array shape [-1]": (_plain({"root": dict(array, shape=[-1]), "buffers": [8]}, bytes(8)), None),
        "used twice": (_plain({"root": [array, array], "buffers": [8]}, bytes(8)), None),
        "unreferenced": (_plain({"root": None, "buffers": [8]}, bytes(8)), None),
        "unknown tag 'pickle'": (_plain({"root": {"$": "pickle", "data": "gAR9lC4="}, "buffers": []}), None),
        "JSON constant NaN": (_plain({"root": math.nan, "buffers": []}), None),
        "duplicate key": (_raw(b'{"root": 1, "root": 2, "buffers": []}'), None),
        "nested deeper than 32": (_plain({"root": json.loads("[" * 40 + "]" * 40), "buffers": []}), None),
        "not valid JSON": (_raw(b'{"root": [1,, "buffers": []}'), None),
        "header must have exactly": (_raw(b'{"root": 1}'), None),
        "version 9": (plain_data._PREFIX.pack(plain_data.MAGIC, 9, 2) + b"{}", None),
        "torch tensor where only numpy": (_plain({"root": dict(array, torch=True), "buffers": [8]},
                                                 bytes(8)), None),
        "bool array with values": (_plain({"root": {"$": "array", "dtype": "|b1", "shape": [2], "buf": 0},
                                           "buffers": [2]}, b"\x00\x07"), None),
    }
    for message, (blob, limit) in cases.items():
        with pytest.raises(PlainDataError, match=message.replace("[", r"\[").replace("(", r"\(")):
            decode(blob, max_bytes=limit or 1 << 20)
    with pytest.raises(PlainDataError, match="bad magic"):  # a pickled object array from np.save
        stream = io.BytesIO()
        np.save(stream, np.array([_Shell()], dtype=object), allow_pickle=True)
        decode(stream.getvalue(), max_bytes=1 << 20)


def test_plain_data_encode_refuses_what_it_cannot_carry():
    cases = {
        "result['x'] is a builtins.object": {"x": object()},
        "result[0] is an array of dtype object": [np.array([1, "a"], dtype=object)],
        "is an array of dtype complex128": np.zeros(2, complex),
        "is an array of dtype [('a', '<i4')]": np.zeros(2, [("a", "<i4")]),
        "has a key 1 of type int": {1: 2},
        "is nested deeper than 32 levels": json.loads("[" * 40 + "]" * 40),
        "result['t'] is a torch tensor; return numpy arrays, e.g. tensor.detach().numpy()":
            {"t": torch.ones(1)},
        "is a builtins.set": {1, 2},
    }
    for message, value in cases.items():
        with pytest.raises(ResultNotPlainData) as caught:
            encode(value)
        assert message in str(caught.value)
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(ResultNotPlainData, match="deeper than 32"):
        encode(cycle)


def test_a_light_sandbox_runs_numpy_plans_without_torch():
    """preload_torch=False (the aggregation's sandbox): numpy only, torch never imported."""
    sandbox = Sandbox(SandboxLimits(), preload_torch=False)
    source = ("def plan():\n    import sys\n    import numpy\n"
              "    return {'torch': 'torch' in sys.modules, 'sum': int(numpy.arange(4).sum())}\n")
    assert sandbox.run(source, "plan", {}).result == {"torch": False, "sum": 6}
    assert Sandbox(SandboxLimits()).run(source, "plan", {}).result["torch"] is True


def test_a_result_over_the_runs_bound_is_refused_by_its_size_before_it_is_read(sandbox):
    """`max_result_bytes` (custom code: releases.custom_max_result_kb) bounds a run below the
    sandbox's max_output_mb. The runner refuses a larger result while encoding it, and a
    plan that writes a frame of its own to the result channel, bypassing the runner, is
    refused from the frame's header: the server never reads or decodes the payload."""
    with pytest.raises(ResultRefused) as caught:
        sandbox.run("def main():\n    return bytes(3_000_000)\n", "main", {},
                    max_result_bytes=1 << 20)
    assert "result of 3000" in str(caught.value) and "1048576-byte output limit" in str(caught.value)
    # a hand-made frame header announcing 6 MB (under max_output_mb, over this run's bound),
    # then a few bytes: refused by the header, the plan killed, nothing read
    source = textwrap.dedent("""
    def main():
        import os, struct
        os.write(3, struct.pack("<cQ", b"R", 6_000_000) + b"x" * 1000)
        import time
        time.sleep(30)
        return "never"
    """)
    started = time.monotonic()
    with pytest.raises(ResultRefused) as caught:
        sandbox.run(source, "main", {}, max_result_bytes=1 << 20)
    assert "5.7 MB exceeds the 1 MB output limit" in str(caught.value)
    assert time.monotonic() - started < 25  # refused at the header, not after the sleep
    with pytest.raises(Exception, match="max_result_bytes must be a positive integer"):
        sandbox.run("def main():\n    return 1\n", "main", {}, max_result_bytes=0)


SESSION_PLAN = textwrap.dedent("""
    import os
    import numpy as np

    SEEN = []

    def main(x):
        SEEN.append(float(np.sum(x)))
        return {"pid": os.getpid(), "seen": list(SEEN)}
""")


def test_a_session_serves_runs_in_one_sandbox_and_ends_with_them(sandbox):
    """A job's rounds: one sandbox, one process, each request answered in turn; the session
    ends when its runs are used up, and nothing of it is left (the autouse check)."""
    with sandbox.session(runs=3) as session:
        first = session.run(SESSION_PLAN, "main", {"x": np.ones(3)})
        second = session.run(SESSION_PLAN, "main", {"x": np.full(2, 5.0)})
        assert first.result["pid"] == second.result["pid"]  # the same interpreter
        assert second.warm and not first.warm
        assert second.result["seen"] == [10.0]  # but each run's module is a fresh one
        session.run(SESSION_PLAN, "main", {"x": np.zeros(1)})
        assert not session.alive
        with pytest.raises(SandboxError, match="closed or used up"):
            session.run(SESSION_PLAN, "main", {"x": np.zeros(1)})


def test_a_warm_spare_becomes_a_session_and_the_next_spare_starts():
    """A job's session does not wait for a cold start: it takes the spare, whose runner
    learns from the first request that more will follow; a single run that comes next
    gets a new spare, never the session's process."""
    with spare_ready() as box:
        with box.session(runs=2) as session:
            first = session.run(SESSION_PLAN, "main", {"x": np.ones(2)})
            second = session.run(SESSION_PLAN, "main", {"x": np.ones(3)})
            assert first.warm and second.warm
            assert first.result["pid"] == second.result["pid"] and second.result["seen"] == [3.0]
            assert not session.alive  # its two runs used up: ended
        wait_for_spare(box)  # started when the session took the last one
        single = run(box, SESSION_PLAN, x=np.ones(1))
        assert single.warm and single.result == {"pid": 2, "seen": [1.0]}


def test_a_sessions_runs_keep_the_sandboxes_limits_and_a_failure_ends_it(sandbox):
    slow = textwrap.dedent("""
        import time
        def main(wait):
            time.sleep(wait)
            return wait
    """)
    # the session takes a warm spare: a cold start's imports alone can outlast a 10 s
    # clock on a loaded 2-core machine
    with spare_ready(timeout_seconds=10) as box, box.session(runs=5) as session:
        assert session.run(slow, "main", {"wait": 0.1}).result == 0.1
        with pytest.raises(PlanTimeout):
            session.run(slow, "main", {"wait": 30})
        assert not session.alive  # killed with its run
    with sandbox.session(runs=5) as session:
        with pytest.raises(PlanFailed, match="ZeroDivisionError"):
            session.run("def main():\n    return 1 / 0\n", "main", {})
        assert not session.alive
    with sandbox.session(runs=2) as session:  # the plan's seccomp stage holds in later runs
        session.run(SESSION_PLAN, "main", {"x": np.ones(1)})
        with pytest.raises(PlanFailed, match="PermissionError|OSError|BlockingIOError"):
            session.run("import socket\ndef main():\n    return socket.socket().fileno()\n",
                        "main", {})
