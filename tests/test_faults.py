"""Load and faults without a live domain: the sandbox queue, the states of a run, recovery
at start (real ledgers, real cgroups, real files), the audit log's rotation and sampling,
a stale pid file, and the disk check. The live walk-throughs (kill -9 during a DP run,
five requests on a budget of two, a full disk) are in test_faults_domain.py."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from common.dp_accounting import Mechanism
from domain_setup.admin import lifecycle
from domain_setup.sandbox.cgroups import CgroupHost, NAME_PREFIX
from domain_setup.server.approval_ledger import ApprovalLedger
from domain_setup.server.audit import AuditLog
from domain_setup.server.health import disk_problems
from domain_setup.server.pending_requests import PendingRequests
from domain_setup.server.privacy_ledger import PrivacyLedger
from domain_setup.server.recovery import recover
from domain_setup.server.run_queue import QueueRefused, RunQueue
from domain_setup.state import StateDir

ADA = "ada@pneumosyft-research.org"
GAUSS = Mechanism(noise_multiplier=1.0, sample_rate=1.0, steps=1)


# --------------------------------------------------------------------------- the queue

def test_five_runs_on_a_budget_of_two_wait_their_turn_in_order():
    queue = RunQueue(memory_budget_mb=2048, max_running=8, max_waiting=10)
    gate = threading.Event()
    started: list[str] = []
    running, peak = [0], [0]
    lock = threading.Lock()

    def run(name: str) -> None:
        with queue.slot(name, memory_mb=1024, owner=ADA):
            with lock:
                started.append(name)
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            gate.wait(10)
            with lock:
                running[0] -= 1

    threads = []
    for i in range(5):
        threads.append(threading.Thread(target=run, args=(f"r{i}",)))
        threads[-1].start()
        _until(lambda: len(queue.entries()) == i + 1)
    rows = queue.entries(owner=ADA)
    assert [r["state"] for r in rows] == ["running", "running", "queued", "queued", "queued"]
    assert [r["position"] for r in rows if r["state"] == "queued"] == [1, 2, 3]
    assert queue.describe()["memory_in_use_mb"] == 2048
    assert queue.entries(owner="grace@lung-imaging-lab.ac.uk") == []
    gate.set()
    for thread in threads:
        thread.join(10)
    assert started == ["r0", "r1", "r2", "r3", "r4"]  # first come, first served
    assert peak[0] == 2 and queue.entries() == []


def test_runs_going_together_share_the_cores_instead_of_oversubscribing_them(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    queue = RunQueue(memory_budget_mb=8192, max_running=8)
    assert queue.core_share() == 8 and queue.core_share(cap=2) == 2  # alone: every core
    shares = []
    with queue.slot("a", memory_mb=10, owner=ADA):
        shares.append(queue.core_share())
        with queue.slot("b", memory_mb=10, owner=ADA), queue.slot("c", memory_mb=10, owner=ADA):
            shares.append(queue.core_share())
    assert shares == [8, 2]  # 8 cores // 3 runs: two threads each, never more than 8 in all
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with queue.slot("a", memory_mb=10, owner=ADA), queue.slot("b", memory_mb=10, owner=ADA), \
            queue.slot("c", memory_mb=10, owner=ADA):
        assert queue.core_share() == 1  # at least one


def test_the_pending_index_keeps_undecided_requests_oldest_first():
    pending = PendingRequests(["a1", "b2"])
    pending.add("c3")
    pending.add("a1")  # seen again: keeps its place
    pending.discard("b2")
    pending.discard("never-there")
    assert pending.ids() == ["a1", "c3"] and len(pending) == 2


def test_a_run_that_can_never_fit_or_finds_the_queue_full_is_refused_at_once():
    queue = RunQueue(memory_budget_mb=1000, max_running=1, max_waiting=1)
    with pytest.raises(QueueRefused, match=r"memory limit \(4096 MB\) is above"):
        with queue.slot("big", memory_mb=4096, owner=ADA):
            pass
    hold, waiting = threading.Event(), threading.Event()

    def first() -> None:
        with queue.slot("a", memory_mb=500, owner=ADA):
            hold.wait(10)

    def second() -> None:
        waiting.set()
        with queue.slot("b", memory_mb=500, owner=ADA):
            pass

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    _until(lambda: queue.describe()["running"] == 1)
    threads[1].start()
    _until(lambda: queue.describe()["queued"] == 1)
    with pytest.raises(QueueRefused, match=r"queue is full \(1 waiting\)"):
        with queue.slot("c", memory_mb=500, owner=ADA):
            pass
    hold.set()
    for thread in threads:
        thread.join(10)
    assert queue.describe()["running"] == 0 and queue.describe()["queued"] == 0


# --------------------------------------------------------------------------- run states

def test_an_approval_is_claimed_once_and_its_run_moves_through_its_states(tmp_path):
    approvals = ApprovalLedger(tmp_path / "approvals.sqlite3")
    assert approvals.claim_run("c1") and not approvals.claim_run("c1")
    assert approvals.run_state("c1") == "queued"
    approvals.run_started("c1")
    assert approvals.run_state("c1") == "running"
    approvals.run_ended("c1", "done")
    assert approvals.run_state("c1") == "done" and approvals.run_state("c9") is None
    assert not approvals.claim_run("c1")
    with pytest.raises(ValueError):
        approvals.run_ended("c1", "whatever")


# --------------------------------------------------------------------------- recovery

def test_recovery_marks_runs_keeps_charges_with_data_and_refunds_those_without(tmp_path):
    approvals = ApprovalLedger(tmp_path / "approvals.sqlite3")
    ledger = PrivacyLedger(tmp_path / "privacy.sqlite3")
    audit = AuditLog(tmp_path)
    for run, state in (("ran", "running"), ("waited", "queued"), ("done", "done")):
        approvals.claim_run(run)
        ledger.charge(ADA, "xray", request_id=run, kind="train_private", mechanism=GAUSS,
                      epsilon=1.0, delta=1e-5, budget=10.0)
        if state != "queued":
            approvals.run_started(run)
        if state == "done":
            approvals.run_ended(run, "done")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / ".abc.partial-1234").write_bytes(b"x" * 1000)
    (blobs / "abc").write_bytes(b"kept")

    found = recover(approvals=approvals, ledger=ledger, audit=audit, blob_dir=blobs,
                    cgroups=None)

    assert found.interrupted == ["ran"] and found.not_run == ["waited"]
    assert found.partial_blobs == [".abc.partial-1234"]
    assert sorted(p.name for p in blobs.iterdir()) == ["abc"]
    statuses = {r.request_id: r.status for r in ledger.account(ADA, "xray", delta=1e-5).releases}
    assert statuses == {"ran": "charged-interrupted", "waited": "refunded", "done": "charged"}
    # the interrupted charge still counts: two of the three charges are spent
    assert ledger.account(ADA, "xray", delta=1e-5).spent_sum == pytest.approx(2.0)
    assert approvals.run_state("ran") == "interrupted"
    assert approvals.run_state("waited") == "not run"
    assert not approvals.claim_run("ran")  # running it again is a new request
    actions = [(e["action"], e["target"], e["outcome"]) for e in audit.read()]
    assert ("recovery.run", "ran", "interrupted") in actions
    assert ("recovery.run", "waited", "not run") in actions
    # a second start finds nothing more
    again = recover(approvals=approvals, ledger=ledger, audit=audit, blob_dir=blobs, cgroups=None)
    assert again.summary().startswith("0 interrupted run(s), 0 queued")


def test_recovery_removes_the_sandbox_cgroups_of_a_dead_server_and_leaves_a_live_ones():
    host = CgroupHost.detect()
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        orphan = host.parents[0] / f"{NAME_PREFIX}{dead.pid}-{'0' * 32}"
        busy = host.parents[0] / f"{NAME_PREFIX}{dead.pid}-{'1' * 32}"
        live = host.parents[0] / f"{NAME_PREFIX}{alive.pid}-{'2' * 32}"
        for directory in (orphan, busy, live):
            directory.mkdir()
        # a process still in a dead server's cgroup (an escaped sandbox) is killed
        victim = subprocess.Popen(["sleep", "60"])
        (busy / "cgroup.procs").write_text(str(victim.pid))
        from domain_setup.sandbox.cgroups import remove_leftovers
        assert remove_leftovers(host) >= 2  # (and any a killed test server left)
        assert not orphan.exists() and not busy.exists() and live.exists()
        assert victim.wait(10) == -9
    finally:
        alive.kill()
        alive.wait()
        live.rmdir()


# --------------------------------------------------------------------------- audit

def test_the_audit_log_rotates_by_size_and_reads_across_its_files(tmp_path):
    audit = AuditLog(tmp_path, max_bytes=2000, keep=2)
    for i in range(60):
        audit.record(ADA, "token.issue", target=f"t{i}")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all(os.path.getsize(tmp_path / f) <= 2000 for f in files)
    assert all(os.stat(tmp_path / f).st_mode & 0o777 == 0o600 for f in files)
    targets = [e["target"] for e in audit.read()]
    assert targets == sorted(targets, key=lambda t: int(t[1:]))  # oldest first, in order
    assert targets[-1] == "t59" and len(targets) < 60  # the oldest were rotated away


def test_anonymous_refusals_are_sampled_and_counted_while_accounts_are_written_in_full(tmp_path):
    audit = AuditLog(tmp_path, sample_window_seconds=0.5, sample_first=3)
    for _ in range(200):
        audit.refused_anonymous("/api/v2/api_call", status=401, reason="invalid token")
    for i in range(20):
        audit.record(ADA, "auth", target="/api/v2/api_call", outcome="refused", n=i)
    time.sleep(0.6)
    audit.refused_anonymous("/api/v2/login", status=401, reason="missing bearer token")
    entries = audit.read()
    anonymous = [e for e in entries if e["actor"] == "anonymous" and e["action"] == "auth"]
    summaries = [e for e in entries if e["action"] == "auth.refused.sampled"]
    assert len(anonymous) == 3 + 1  # the first three of the window, then the next window's
    assert len(summaries) == 1 and summaries[0]["count"] == 200 - 3
    assert summaries[0]["reasons"] == [["invalid token", 197]]
    assert summaries[0]["paths"] == [["/api/v2/api_call", 197]]
    assert len([e for e in entries if e["actor"] == ADA]) == 20  # every one, in full
    assert os.path.getsize(tmp_path / "audit.jsonl") < 200 * 170 / 4


# --------------------------------------------------------------------------- pid file

def test_a_stale_pid_file_naming_another_process_neither_blocks_start_nor_gets_it_killed(
        tmp_path):
    state = StateDir(tmp_path)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        state.pid_path.write_text(str(stranger.pid))
        assert not lifecycle.is_domain_process(stranger.pid, state)
        assert lifecycle.stop(state) is False  # it is not our server: left alone
        assert stranger.poll() is None and not state.pid_path.exists()
    finally:
        stranger.kill()
        stranger.wait()


# --------------------------------------------------------------------------- disk

def test_low_free_space_and_an_unwritable_state_directory_are_reported(tmp_path):
    assert disk_problems(tmp_path, min_free_mb=1) == []
    free_mb = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize // 2**20
    problems = disk_problems(tmp_path, min_free_mb=free_mb + 10_000)
    assert len(problems) == 1 and problems[0].startswith("the domain's disk is almost full")
    missing = disk_problems(tmp_path / "gone", min_free_mb=1)
    assert missing and "not writable" in missing[0]


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)
