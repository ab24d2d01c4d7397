"""A hospital's busiest and worst days, on one live domain whose state directory is a small
file system of its own (a tmpfs, so that it can be filled): a flood of junk requests, five
researchers' runs on a sandbox budget of two, a full disk, and kill -9 in the middle of a
DP run and of an upload. Each test proves what happened from the domain's own records
(the audit log, the ledgers, the files), not from a crash."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from common.errors import DomainError
from conftest import RESEARCHER, start_hospital
from domain_setup.sandbox.cgroups import NAME_PREFIX, CgroupHost
from domain_setup.server.approval_ledger import ApprovalLedger
from domain_setup.server.privacy_ledger import PrivacyLedger
from scientist import TrainingPlan, connect, my_runs
from scientist.connect import domain_get
from scientist.plans import train_xray_plan
from scientist.privacy import private_training, train_private_xray_plan
from scientist.submission import request_status, run_approved, split_assets, submit_plan

pytestmark = pytest.mark.domain
TMPFS_MB = 600
RUN_MEMORY_MB = 1024  # --plan-memory-mb: a budget of two runs is 2048


@pytest.fixture(scope="module")
def busy_policies(tmp_path_factory) -> Path:
    """The busy domain's policy folder: the demos' (no DP required), editable."""
    policies = tmp_path_factory.mktemp("busy-policies") / "policies"
    shutil.copytree(Path(__file__).parents[1] / "demos" / "policies", policies)
    return policies


@pytest.fixture(scope="module")
def busy(tmp_path_factory, busy_policies):
    """A domain on its own tmpfs, allowed two runs' memory at once (and up to 8 runs by
    concurrency, so that the memory budget is what holds them back)."""
    mount = tmp_path_factory.mktemp("busy-disk")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m,mode=0700", "tmpfs",
                    str(mount)], check=True)
    domain = None
    try:
        domain = start_hospital(mount / "state", "Busy General", extra_args=(
            "--policies", str(busy_policies),
            "--plan-memory-mb", str(RUN_MEMORY_MB),
            "--sandbox-memory-budget-mb", str(2 * RUN_MEMORY_MB),
            "--max-concurrent-runs", "8", "--min-free-disk-mb", "50"))
        yield domain
    finally:
        if domain is not None:
            domain.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(scope="module")
def ada_file(busy):
    return busy.researcher_file(RESEARCHER)


def _submit_training(client, epochs: int, reason: str, private: bool = False):
    plan = TrainingPlan(epochs=epochs)
    constants = {"config": plan.config(), "initial_weights": {}}
    if private:
        constants["privacy"] = private_training(1.0)
    return submit_plan(client, train_private_xray_plan if private else train_xray_plan,
                       inputs=split_assets(client, "xray", "train"), constants=constants,
                       reason=reason)


def _audit_lines(domain) -> list[dict]:
    return [json.loads(line) for path in sorted(domain.state.root.glob("audit.jsonl*"))
            for line in path.read_text().splitlines() if line.strip().startswith("{")]


def test_a_flood_of_junk_is_counted_not_written_line_by_line(busy, ada_file):
    before = len(_audit_lines(busy))
    junk = [{"Authorization": "Bearer not-a-token"}, {"Authorization": "Bearer eyJhbGciOi.x.y"},
            {}]

    def hit(i: int) -> int:
        return requests.post(f"{busy.url}/api/v2/api_call", data=b"\0" * 1000,
                             headers=junk[i % 3], timeout=30).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(hit, range(600)))
    assert set(statuses) == {401}
    ada = connect(connection_file=ada_file)  # a researcher still gets through
    assert "xray" in {d.name for d in ada.datasets.get_all()}
    written = [e for e in _audit_lines(busy)[before:] if e["actor"] == "anonymous"]
    # at most 20 lines per path and reason in the window, not 600
    assert 0 < len(written) <= 3 * 20, len(written)


def test_five_runs_on_a_budget_of_two_wait_in_a_queue_the_researcher_can_see(busy, ada_file):
    ada = connect(connection_file=ada_file)
    submissions = [_submit_training(ada, epochs=4, reason=f"queue {i}") for i in range(5)]
    assert busy.cli("review", "auto", "--approve-compliant").count("approved") == 5
    seen: list[dict] = []  # every row of every poll
    most_running = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            rows = my_runs(ada_file)
            seen.extend(rows)
            most_running[0] = max(most_running[0], sum(r["state"] == "running" for r in rows))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        clients = [connect(connection_file=ada_file) for _ in submissions]
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            results = list(pool.map(run_approved, clients, submissions))
    finally:
        done.set()
        watcher.join()
    assert all(set(r) >= {"weights", "history"} for r in results)
    queued = [r for r in seen if r["state"] == "queued"]
    assert queued and {r["position"] for r in queued} <= {1, 2, 3}
    assert all(r["owner"] == RESEARCHER for r in seen) and most_running[0] == 2
    names = {s.func_name for s in submissions}
    runs = [e for e in _audit_lines(busy)
            if e["action"] == "execution" and e.get("function") in names]
    assert len(runs) == 5 and all(e["outcome"] == "ok" for e in runs)
    assert any(float(e["queued_seconds"]) > 0.5 for e in runs)
    # never more than two at once: each run's [start, end] from the audit
    spans = [(_epoch(e) - float(e["seconds"]), _epoch(e)) for e in runs]
    for start, _ in spans:
        assert sum(1 for s, t in spans if s <= start + 0.05 < t) <= 2, spans
    # a run that arrived while two ran waited until one of them ended (how many had to
    # wait depends on how the five requests interleave, so the test checks the rule)
    for (start, end), e in zip(spans, runs):
        arrived = start - float(e["queued_seconds"])
        running = [t for s, t in spans if (s, t) != (start, end) and s <= arrived < t]
        if len(running) >= 2:
            assert start >= min(running) - 0.25, (arrived, start, spans)


def count_images(images):
    return {"n": len(images)}


def test_the_domain_approves_compliant_vetted_plans_as_they_arrive_and_nothing_else(
        busy, ada_file, busy_policies):
    approval = busy_policies / "approval.yaml"
    original = approval.read_text()
    approval.write_text(original.replace("approve_compliant: false", "approve_compliant: true"))
    busy.cli("policies", "reload")
    try:
        ada = connect(connection_file=ada_file)
        vetted = _submit_training(ada, epochs=1, reason="vetted and compliant")
        assert request_status(ada, vetted) == ("approved", "")  # when her submission returns
        custom = submit_plan(ada, count_images, inputs={"images": split_assets(
            ada, "xray", "train")["images"]}, constants={}, reason="custom code")
        assert request_status(ada, custom)[0] == "pending"
        # the vetted plan with constants past approval.yaml's limits is a violation: it waits
        too_long = submit_plan(ada, train_xray_plan, inputs=split_assets(ada, "xray", "train"),
                               constants={"config": {**TrainingPlan(epochs=1).config(),
                                                     "epochs": 50}, "initial_weights": {}},
                               reason="fifty epochs")
        assert request_status(ada, too_long)[0] == "pending"
        pending = busy.admin.session.request("GET", "/pneumosyft/requests/pending")["pending"]
        assert {custom.request_id, too_long.request_id} <= set(pending)
        assert vetted.request_id not in pending
        (approval_entry,) = [e for e in _audit_lines(busy) if e["action"] == "request.approve"
                             and e["target"] == vetted.request_id]
        assert approval_entry["actor"] == "domain (approve_compliant)"
        assert approval_entry["plan"] == "train"
        assert set(run_approved(ada, vetted)) >= {"weights", "n_samples"}
        # a researcher may not read the index; the admin's denial takes the request out of it
        with pytest.raises(DomainError, match="your role may not list pending requests"):
            domain_get("/pneumosyft/requests/pending", ada_file)
        busy.cli("review", "deny", custom.request_id, "--reason", "not today")
        busy.cli("review", "deny", too_long.request_id, "--reason", "too many epochs")
        assert not {custom.request_id, too_long.request_id} & set(busy.admin.session.request(
            "GET", "/pneumosyft/requests/pending")["pending"])
    finally:
        approval.write_text(original)
        busy.cli("policies", "reload")


def test_a_full_disk_says_so_in_one_line_and_health_is_degraded(busy, ada_file):
    ada = connect(connection_file=ada_file)
    filler = busy.state.root.parent / "filler"
    try:
        _fill(filler)
        health = _health_becomes(busy, "degraded")  # (probed at most once a second)
        assert "disk" in health["problems"][0]
        with pytest.raises(DomainError, match="the domain's disk is full: the request was "
                                              "not stored"):
            try:
                _submit_training(ada, epochs=1, reason="while the disk is full")
            except Exception as exc:  # syft raises its own SyftException
                raise DomainError(" ".join(str(exc).split())) from None
        issued = busy.run("token", "issue", "--email", RESEARCHER, check=False)
        assert issued.returncode == 1
        assert issued.stderr.strip().splitlines()[-1].startswith("error: ")
        assert "Traceback" not in issued.stderr
        status = busy.run("status", check=False)
        assert "degraded" in status.stdout
    finally:
        filler.unlink(missing_ok=True)
    _health_becomes(busy, "ok")
    submission = _submit_training(ada, epochs=1, reason="after the disk was freed")
    assert submission.request_id


def test_kill_9_during_a_dp_run_and_an_upload_is_reconciled_at_start(busy, ada_file):
    ada = connect(connection_file=ada_file)
    submission = _submit_training(ada, epochs=20, reason="killed mid-run", private=True)
    busy.cli("review", "approve", submission.request_id)
    approvals = ApprovalLedger.of_state(busy.state.root)
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(_run(ada_file, submission)))
    runner.start()
    code_id = _wait_for_running(approvals)
    orphan = _complete_blob_upload(busy)  # an upload that stopped before its dataset
    stray = busy.state.blob_dir / ("f" * 32)  # a blob file syft has no entry for
    stray.write_bytes(b"left over")
    kept = {p.name for p in busy.state.blob_dir.iterdir() if p.is_file()} - {orphan.name,
                                                                             stray.name}
    partial = _start_blob_upload(busy)
    pid = busy.state.read_pid()
    sandboxes_before = _cgroups_of(pid)
    assert sandboxes_before  # its spare and its run
    os.kill(pid, signal.SIGKILL)
    runner.join(60)
    assert "error" in outcome  # a clean error for the researcher, no result
    assert partial.exists()  # what the killed upload left

    busy.start()
    assert _cgroups_of(pid) == []  # the dead server's sandboxes are gone
    assert not partial.exists()
    assert not orphan.exists() and not stray.exists()
    assert kept <= {p.name for p in busy.state.blob_dir.iterdir()}  # datasets and results stay
    (summary,) = [e for e in _audit_lines(busy) if e["action"] == "recovery"][-1:]
    assert orphan.name in summary["orphan_blobs"] and stray.name in summary["orphan_blobs"]
    assert approvals.run_state(code_id) == "interrupted"
    ledger = PrivacyLedger.of_state(busy.state.root)
    (charge,) = [r for r in ledger.account(RESEARCHER, "xray", delta=1e-5).releases
                 if r.request_id == code_id]
    assert charge.status == "charged-interrupted"
    recovered = [e for e in _audit_lines(busy) if e["action"] == "recovery.run"]
    assert recovered[-1]["target"] == code_id and recovered[-1]["outcome"] == "interrupted"
    assert busy.cli("privacy", "show", RESEARCHER).count("charged-interrupted") == 1
    # running it again is a new request: this approval is used up
    again = _run(ada_file, submission)
    assert "has run once already" in again["error"]
    assert len([r for r in ledger.account(RESEARCHER, "xray", delta=1e-5).releases
                if r.request_id == code_id]) == 1  # charged once


# --------------------------------------------------------------------------- helpers

def _run(ada_file, submission) -> dict:
    try:
        return {"result": run_approved(connect(connection_file=ada_file), submission)}
    except Exception as exc:
        return {"error": str(exc)}


def _wait_for_running(approvals: ApprovalLedger, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with approvals._connection() as db:
            row = db.execute("SELECT code_id FROM runs WHERE state = 'running'").fetchone()
        if row:
            time.sleep(1.0)  # data is in the sandbox, training has begun
            return row[0]
        time.sleep(0.1)
    raise AssertionError("the run never started")


class _Quiet:
    def update(self, _n: int) -> None:
        pass


def _allocate_blob(session, size: int) -> str:
    """A blob entry allocated by the admin, as an upload starts; its id."""
    from syft.types.blob_storage import CreateBlobStorageEntry

    deposit = session.client().api.services.blob_storage.allocate(
        CreateBlobStorageEntry.from_obj(b"", file_size=size))
    return deposit.blob_storage_entry_id.no_dash


def _complete_blob_upload(domain) -> Path:
    """An upload whose bytes were all written and whose object never was (the admin's
    upload stopped between the two); the blob file it left."""
    from domain_setup.admin.session import AdminSession
    from domain_setup.admin.upload import BlobBytes, stream_blob

    session = AdminSession(domain.state)
    size = 1 << 20
    entry_id = _allocate_blob(session, size)
    stream_blob(session, entry_id, BlobBytes(iter([b"\1" * size]), size), _Quiet())
    (written,) = [p for p in domain.state.blob_dir.iterdir() if entry_id in p.name]
    return written


def _start_blob_upload(domain) -> Path:
    """Allocate a blob as the admin and stream it slowly; the partial file it makes."""
    from domain_setup.admin.session import AdminSession
    from domain_setup.admin.upload import BlobBytes, stream_blob

    session = AdminSession(domain.state)
    size = 32 << 20
    entry_id = _allocate_blob(session, size)

    def slow_pieces():
        for _ in range(size // (1 << 20)):
            yield b"\0" * (1 << 20)
            time.sleep(0.25)

    def upload() -> None:
        try:  # the admin CLI's own streaming, slowed down
            stream_blob(session, entry_id, BlobBytes(slow_pieces(), size), _Quiet())
        except (DomainError, OSError):
            pass  # the server is killed under it

    threading.Thread(target=upload, daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partials = list(domain.state.blob_dir.glob(".*.partial-*"))
        if partials and partials[0].stat().st_size > 0:
            return partials[0]
        time.sleep(0.1)
    raise AssertionError("the upload never started writing")


def _cgroups_of(pid: int) -> list[str]:
    host = CgroupHost.detect()
    return sorted(d.name for parent in host.parents
                  for d in parent.glob(f"{NAME_PREFIX}{pid}-*"))


def _health_becomes(domain, status: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = requests.get(f"{domain.url}/health", timeout=10).json()
        if health["status"] == status or time.monotonic() > deadline:
            assert health["status"] == status, health
            return health
        time.sleep(0.2)


def _fill(path: Path) -> None:
    """Fill the file system holding `path` to the last byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def _epoch(entry: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
