"""Flower's deployment engine on loopback, for bench_vs_flower.py (no Flower import here).

One `flower-superlink` and one `flower-supernode` per client, each its own process on
127.0.0.1, insecure (no TLS, as PneumoSyft's loopback domains), from the Flower virtual
environment (bench/.flower-venv: Flower needs a newer numpy than syft 0.9.5 allows).
Each run is submitted with `flwr run bench/flower-app CONNECTION --stream`; the SuperLink
then starts the ServerApp and each SuperNode its ClientApps in processes of their own
(Flower's default `subprocess` isolation). Every process is stopped at the end, by pid:
the ones started here and every descendant they left.

    with FlowerDeployment(venv, workdir, parts=[p1, p2, p3], torch_threads=1) as flower:
        result = flower.run({"secure": True, "rounds": 3, ...})   # round seconds, weights
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
APP = BENCH / "flower-app"
HOST = "127.0.0.1"
CONNECTION = "pneumosyft-bench"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, ...), or None."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time): names one process even after its pid is reused."""
    fields = _stat(pid)
    return (pid, fields[19]) if fields else None


def descendants(pid: int) -> list[tuple[int, str]]:
    """Every live descendant of `pid` (read from /proc), as `identity` pairs."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if (ident := identity(child)):
                found.append(ident)
            todo.append(child)
    return found


def alive(ident: tuple[int, str]) -> bool:
    """Is this very process (same pid, same start time) still running, not a zombie?"""
    fields = _stat(ident[0])
    return bool(fields) and fields[19] == ident[1] and fields[0] != "Z"


def stop_processes(idents: list[tuple[int, str]], timeout: float = 10.0) -> None:
    """SIGTERM each process, wait up to `timeout`, then SIGKILL those still alive."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for ident in idents:
            if alive(ident):
                try:
                    os.kill(ident[0], sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(alive(ident) for ident in idents):
            time.sleep(0.1)


def stop_popen(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a child started here (by its pid) and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


ROUND_HEADER = re.compile(r"\[RUN (\d+), ROUND (\d+)\]")
TRAIN_LINE = re.compile(r"\[pneumosyft-bench\] train ([0-9.]+) s")


def message_timings(log: Path, run_id: str) -> dict[int, list[dict]]:
    """Per round of run `run_id`, what one SuperNode's log says of each message it took:
    seconds from receipt to its ClientApp process announcing itself (SuperExec's poll,
    a new interpreter, Flower's imports), in that process until the reply was handed back
    (imports of torch and the project, loading the app and data, the work), of which
    `train_xray_plan` itself, and receiving plus sending over the Fleet API."""
    rounds: dict[int, list[dict]] = {}
    current, message = None, None
    for line in log.read_text(errors="replace").splitlines():
        stamp, _, text = line.strip().partition(" ")
        try:
            t = float(stamp)
        except ValueError:
            continue
        if (header := ROUND_HEADER.search(text)):
            current = int(header.group(2)) if header.group(1) == run_id else None
        elif current is None:
            continue
        elif "Receiving: train message" in text:
            message = {"round": current, "receiving": t, "train": 0.0}
        elif message is None:
            continue
        elif "Received successfully" in text:
            message["received"] = t
        elif "Start `flwr-clientapp` process" in text:
            message["launched"] = t
        elif (train := TRAIN_LINE.search(text)):
            message["train"] = float(train.group(1))
        elif "Sending: train message" in text:
            message["sending"] = t
        elif "Sent successfully" in text and {"received", "launched", "sending"} <= set(message):
            rounds.setdefault(message["round"], []).append({
                "launch": message["launched"] - message["received"],
                "clientapp": message["sending"] - message["launched"],
                "train": message["train"],
                "transfer": (message["received"] - message["receiving"]) + (t - message["sending"]),
            })
            message = None
    return rounds


class FlowerDeployment:
    """A SuperLink and one SuperNode per partition, started on entry, stopped on exit."""

    def __init__(self, venv: Path, workdir: Path, *, parts: list[Path], torch_threads: int,
                 log=print):
        self.venv, self.workdir, self.parts = Path(venv), Path(workdir), list(parts)
        self.torch_threads, self.log = int(torch_threads), log
        self.processes: list[subprocess.Popen] = []
        self.known: set[tuple[int, str]] = set()  # every descendant seen, for the final sweep
        self.superlink_port = free_port()
        self.runs = 0
        self.epoch = time.perf_counter()

    def env(self, home: str) -> dict:
        """The environment of every Flower process: the Flower venv's tools first on PATH
        (the SuperLink and SuperNodes launch `flower-superexec` and `flwr-*app` by name),
        the repository root on PYTHONPATH (the apps import common/), each process its own
        FLWR_HOME, no telemetry, no update check, no `uv sync` of app dependencies, and
        the torch thread count of a PneumoSyft domain on this machine."""
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("VIRTUAL_ENV", "PYTHONHOME"))}
        home_dir = self.workdir / "flwr-home" / home
        home_dir.mkdir(parents=True, exist_ok=True)
        env.update({
            "PATH": f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(REPO),
            "FLWR_HOME": str(home_dir),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "OMP_NUM_THREADS": str(self.torch_threads),
            "MKL_NUM_THREADS": str(self.torch_threads),
        })
        return env

    def start(self, name: str, command: list[str], home: str) -> subprocess.Popen:
        """Start one Flower process; its output (and its children's) goes to NAME.log,
        each line stamped with seconds since the deployment started (Flower's own log
        lines carry no time), to see where a round's time goes."""
        process = subprocess.Popen(command, cwd=self.workdir, env=self.env(home),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        thread = threading.Thread(target=self._copy_log, daemon=True,
                                  args=(process.stdout, self.workdir / f"{name}.log"))
        thread.start()
        self.processes.append(process)
        return process

    def _copy_log(self, stream, path: Path) -> None:
        with stream, open(path, "w", encoding="utf-8", errors="replace") as out:
            for line in iter(stream.readline, b""):
                text = line.decode("utf-8", errors="replace").rstrip()
                out.write(f"{time.perf_counter() - self.epoch:9.3f} {text}\n")
                out.flush()

    def __enter__(self) -> "FlowerDeployment":
        self.workdir.mkdir(parents=True, exist_ok=True)
        bin_dir = self.venv / "bin"
        try:
            self.start("superlink", [str(bin_dir / "flower-superlink"), "--insecure",
                                     "--host", HOST, "--port", str(self.superlink_port),
                                     "--disable-runtime-dependency-installation"],
                       "superlink")
            self.wait_for_port(self.superlink_port)
            for i, part in enumerate(self.parts):
                self.start(f"supernode-{i + 1}", [
                    str(bin_dir / "flower-supernode"), "--insecure",
                    "--superlink", f"{HOST}:{self.superlink_port}",
                    "--host", HOST, "--port", str(free_port()),
                    "--node-config", f'data="{part}" torch-threads={self.torch_threads}'],
                    f"supernode-{i + 1}")
            cli_home = self.workdir / "flwr-home" / "cli"
            cli_home.mkdir(parents=True, exist_ok=True)
            (cli_home / "config.toml").write_text(
                f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                f'address = "{HOST}:{self.superlink_port}"\ninsecure = true\n')
        except BaseException:
            self.__exit__()
            raise
        return self

    def wait_for_port(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                if sock.connect_ex((HOST, port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the Flower SuperLink did not listen on {HOST}:{port} "
                           f"within {timeout:.0f} s (see {self.workdir}/superlink.log)")

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                name = Path(process.args[0]).name
                raise RuntimeError(f"{name} exited with {process.returncode} "
                                   f"(logs in {self.workdir})")

    def remember_descendants(self) -> None:
        for process in self.processes:
            self.known.update(descendants(process.pid))

    def run(self, run_config: dict, timeout: float = 900.0) -> dict:
        """One `flwr run` of the app; returns the ServerApp's round seconds and final
        weights (a dict of arrays by state-dict name) once its run has finished."""
        self.runs += 1
        out = self.workdir / f"run-{self.runs}"
        for suffix in (".json", ".npz"):
            out.with_suffix(suffix).unlink(missing_ok=True)
        overrides = out.with_suffix(".toml")  # JSON strings, numbers and booleans are TOML
        overrides.write_text("".join(f"{key} = {json.dumps(value)}\n"
                                     for key, value in dict(run_config, out=str(out)).items()))
        cli = self.start(f"flwr-run-{self.runs}",
                         [str(self.venv / "bin" / "flwr"), "run", str(APP), CONNECTION,
                          "--run-config", str(overrides), "--stream"], "cli")
        deadline = time.monotonic() + timeout
        ended = None  # when `flwr run --stream` returned: the run is over, result or not
        try:
            while not out.with_suffix(".json").exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Flower run did not finish within {timeout:.0f} s "
                                       f"(logs in {self.workdir})")
                if cli.poll() is not None:
                    ended = ended or time.monotonic()
                    if cli.returncode != 0 or time.monotonic() - ended > 10:
                        raise RuntimeError(f"the Flower run ended without a result "
                                           f"(`flwr run` exit {cli.returncode}):\n"
                                           f"{self.tail(f'flwr-run-{self.runs}')}")
                self.check_alive()
                self.remember_descendants()
                time.sleep(0.5)
            time.sleep(0.5)  # the npz is written just before the json
            result = json.loads(out.with_suffix(".json").read_text())
            started = re.search(r"Successfully started run (\d+)",
                                (self.workdir / f"flwr-run-{self.runs}.log").read_text())
            result["run_id"] = started.group(1) if started else ""
            with np.load(out.with_suffix(".npz"), allow_pickle=False) as stored:
                result["weights"] = {name: stored[name] for name in stored.files}
        finally:
            self.remember_descendants()
            try:
                cli.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop_popen(cli)
            self.processes.remove(cli)
        return result

    def breakdown(self, run_id: str, rounds: list[int]) -> dict:
        """Where the clients' time went in `rounds` of a run, per client and round (means
        over clients): messages, and seconds in `message_timings`' parts."""
        per_client = []
        for i in range(len(self.parts)):
            timings = message_timings(self.workdir / f"supernode-{i + 1}.log", run_id)
            messages = [m for r in rounds for m in timings.get(r, [])]
            per_client.append({key: sum(m[key] for m in messages) / max(1, len(rounds))
                               for key in ("launch", "clientapp", "train", "transfer")}
                              | {"messages": len(messages) / max(1, len(rounds))})
        return {key: sum(c[key] for c in per_client) / len(per_client) for key in per_client[0]}

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def __exit__(self, *exc: object) -> None:
        """Stop the SuperNodes, then the SuperLink, then anything they started (SuperExec,
        ServerApp and ClientApp processes run in sessions of their own), all by pid."""
        self.remember_descendants()
        for process in reversed(self.processes):
            stop_popen(process)
        self.processes.clear()
        stop_processes([ident for ident in self.known if alive(ident)])


if __name__ == "__main__":
    sys.exit("flower_side.py is used by bench/bench_vs_flower.py; run that instead")
