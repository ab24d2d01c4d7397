"""The program that runs INSIDE the sandbox (``python -I -B runner_main.py FD``).

It imports numpy and torch while it is still trusted and before any request
exists (so that a sandbox can be started ahead of its run, warm), then reads the
request from stdin (see ``protocol``), limits itself (rlimits), installs the
strict seccomp stage on all its threads, then compiles and runs the researcher's module in a
fresh namespace and calls ``function(**kwargs)``. The result goes back as plain
data on fd 3, or an ERROR frame with the exception type, a one-line message and
a short traceback. The researcher's prints go to the real stdout/stderr. Its one
argument is the inherited fd of the result pipe, which it moves to fd 3 first;
with a second, ``--numpy-only``, it does not import torch (a light sandbox). When its
first request says ``session`` (the host's choice, for catalogue code only), it serves
one request after another until its stdin ends (`serve`): any started sandbox, a warm
spare too, can become a session.

It imports only the standard library, numpy, torch (with `WARM_MODULES`) and its sibling modules
(bound read-only at /opt/pneumosyft/pneumosyft_sandbox); the vetted packages are
importable from /opt/pneumosyft.
"""

import time

STARTED = time.monotonic()
# Modules the vetted plans import on their first use, imported with torch while trusted
# (1.5 s in a fresh process: torch's optimisers pull in torch._dynamo, DP-SGD opacus), so
# a warm run starts its training at once.
WARM_MODULES = ("torch._dynamo", "opacus")

import base64  # noqa: E402
import ctypes  # noqa: E402
import linecache  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402

sys.path.insert(0, "/opt/pneumosyft")  # = protocol.SANDBOX_ROOT, needed to import protocol

from pneumosyft_sandbox import plain_data, protocol  # noqa: E402
from pneumosyft_sandbox.errors import ResultNotPlainData  # noqa: E402

PLAN_FILENAME = "<plan>"
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
MB = 1024 * 1024


class Stage(Exception):
    """Wraps an exception with the stage it happened in: setup, plan or result."""

    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(stage)
        self.stage, self.exc = stage, exc


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_filter(program: bytes, syscall_number: int) -> None:
    """Load a raw BPF seccomp program on every thread of this process (TSYNC)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    status = libc.syscall(ctypes.c_long(syscall_number), ctypes.c_ulong(SECCOMP_SET_MODE_FILTER),
                          ctypes.c_ulong(SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(fprog))
    if status != 0:
        raise OSError(ctypes.get_errno(), f"seccomp(2) refused the plan filter (status {status})")


def set_rlimits(limits: dict, runs: int = 1) -> None:
    """Hard rlimits the researcher's code cannot raise again (the CPU limit counts from
    now: the imports before the request are not the plan's; `runs` runs' worth)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(limits["cpu_seconds"]) * max(1, runs) + int(usage.ru_utime + usage.ru_stime) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    for name, value in ((resource.RLIMIT_FSIZE, int(limits["max_file_mb"]) * MB),
                        (resource.RLIMIT_NOFILE, int(limits["max_open_files"])),
                        (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(name, (value, value))


def prepare(header: dict, kwargs_data: bytearray, *, first: bool = True,
            session: bool = False) -> dict:
    """Trusted setup: rlimits, numpy/torch, kwargs, then the strict seccomp stage. In a
    session (one sandbox serving a federated job's rounds: the catalogue's code only) the
    first request sets the limits and the filter for all of them, the CPU limit being
    ``session_runs`` times a run's, and stdin stays open for the next request."""
    if not session:
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    if first:
        set_rlimits(header["limits"], runs=int(header.get("session_runs", 1)))
        torch = sys.modules.get("torch")  # imported already, in main (unless --numpy-only)
        if torch is not None and header.get("torch_threads"):
            torch.set_num_threads(int(header["torch_threads"]))
    kwargs = plain_data.decode(kwargs_data, max_bytes=len(kwargs_data), allow_tensors=True)
    if not isinstance(kwargs, dict):
        raise TypeError("kwargs must be a dict")
    if first:
        install_filter(base64.b64decode(header["plan_filter"]), int(header["seccomp_syscall"]))
    return kwargs


def run_plan(source: str, function: str, kwargs: dict):
    """Compile and run the researcher's module in a fresh namespace, call the function."""
    linecache.cache[PLAN_FILENAME] = (len(source), None, source.splitlines(True), PLAN_FILENAME)
    module = types.ModuleType("__plan__")
    sys.modules["__plan__"] = module
    exec(compile(source, PLAN_FILENAME, "exec"), module.__dict__)
    target = module.__dict__.get(function)
    if not callable(target):
        raise NameError(f"the plan's source defines no function {function!r}")
    return target(**kwargs)


def encode_result(value, max_bytes: int) -> list:
    """Encode the result, refusing anything over the output bound."""
    parts = plain_data.encode_parts(value, name="result")
    size = sum(len(memoryview(part).cast("B")) for part in parts)
    if size > max_bytes:
        raise ResultNotPlainData(
            f"result of {size} bytes exceeds the {max_bytes}-byte output limit")
    return parts


def describe(stage: str, exc: BaseException) -> dict:
    """The ERROR frame: stage, exception type, one-line message, short traceback."""
    try:
        lines = str(exc).strip().splitlines()
        tb = exc.__traceback__
    except BaseException:  # noqa: BLE001 - a researcher's exception with a broken __str__
        lines, tb = ["<unprintable message>"], None
    if stage == "plan":
        while tb is not None and tb.tb_frame.f_code.co_filename != PLAN_FILENAME:
            tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return {"stage": stage, "type": type(exc).__name__,
            "message": (lines[0] if lines else "")[:500], "traceback": text[-8000:]}


def flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - the researcher may have replaced or closed them
            pass


def main() -> None:
    out = protocol.RESULT_FD
    inherited = int(sys.argv[1])
    if inherited != out:
        os.dup2(inherited, out, inheritable=False)
        os.close(inherited)
    protocol.write_json_frame(out, protocol.TIMING, {"event": "main", "t": STARTED})
    try:
        import numpy  # noqa: F401  (imported while trusted, before any request)
        if "--numpy-only" not in sys.argv[2:]:
            import torch  # noqa: F401
            environment = dict(os.environ)
            for name in WARM_MODULES:
                __import__(name)
            os.environ.clear()  # torch._dynamo sets a cache directory: the plan's
            os.environ.update(environment)  # environment stays what bwrap gave it
    except BaseException as exc:
        protocol.write_json_frame(out, protocol.ERROR, describe("setup", exc))
        os._exit(0)
    first, session = True, False
    while True:
        answered, session = serve(out, first=first, session=session)
        if not (answered and session):
            break
        first = False
    os._exit(0)  # no atexit handlers or finalizers of the researcher's code


def serve(out: int, *, first: bool, session: bool) -> tuple[bool, bool]:
    """Read one request, run it, answer with a RESULT or ERROR frame. Returns (answered,
    session): answered is False when a session's input ended (the host closed it) before
    another request; session is what the first request's header said."""
    try:
        try:
            try:
                header, kwargs_data = protocol.read_request(0)
            except EOFError:
                if not first:
                    return False, session
                raise
            if first:
                session = header.get("session") is True
            protocol.write_json_frame(out, protocol.TIMING,
                                      {"event": "request", "t": time.monotonic()})
            kwargs = prepare(header, kwargs_data, first=first, session=session)
            del kwargs_data
        except BaseException as exc:
            raise Stage("setup", exc) from None
        protocol.write_json_frame(out, protocol.TIMING, {"event": "ready", "t": time.monotonic()})
        try:
            result = run_plan(header["source"], header["function"], kwargs)
        except BaseException as exc:
            raise Stage("plan", exc) from None
        try:
            parts = encode_result(result, int(header["max_result_bytes"]))
        except BaseException as exc:
            raise Stage("result", exc) from None
        flush_std()
        protocol.write_frame(out, protocol.RESULT, parts)
    except Stage as failure:
        flush_std()
        protocol.write_json_frame(out, protocol.ERROR, describe(failure.stage, failure.exc))
    return True, session

if __name__ == "__main__":
    main()
