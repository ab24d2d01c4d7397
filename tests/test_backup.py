"""Backup and restore of a live domain: a backup taken while tokens are issued and revoked,
the audit log written and a dataset uploaded; kill -9, the state directory deleted, restored
and started: the same identity, users, datasets, result, tokens, revocation, privacy spent,
federation members, and the audit log continued. Bad passphrases, damaged files and
non-empty targets refused in one line with nothing written. PostgreSQL through pg_dump and
pg_restore into another database and another state directory (a self-signed TLS
certificate moving with it)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import requests

from common.errors import PneumoSyftError
from common.models import build_model
from common.sealing import generate_keypair, key_to_text
from conftest import OTHER_RESEARCHER, PROJECT_ROOT, RESEARCHER, start_hospital
from demos.local_domain import LocalDomain
from domain_setup.admin import AdminClient
from domain_setup.admin.backup import PASSPHRASE_ENV
from domain_setup.server.audit import AuditLog
from scientist import TrainingPlan, connect
from scientist.privacy import evaluate_private_xray_plan, private_evaluation
from scientist.submission import run_approved, split_assets, submit_plan

pytestmark = pytest.mark.domain
PASSPHRASE = "saint mary's backup passphrase, kept in the safe"
MEMBER = "Royal Infirmary"


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m domain_setup ARGS` as its own process (the state dir among the args)."""
    environment = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
    return subprocess.run([sys.executable, "-m", "domain_setup", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, env={**environment, **(env or {})},
                          stdin=subprocess.DEVNULL, timeout=600)


def _refused(result: subprocess.CompletedProcess, fragment: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _jti(token: str) -> str:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})["jti"]


def _wait_dead(pid: int) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} still alive")


def _dataset_arrays(admin: AdminClient, name: str) -> dict:
    dataset = next(d for d in admin.syft_client().datasets.get_all() if d.name == name)
    return {asset: np.asarray(dataset.assets[asset].data) for asset in
            ("train_images", "train_labels", "test_images", "test_labels")}


@pytest.fixture(scope="module")
def passphrase_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "passphrase"
    path.write_text(PASSPHRASE + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    hospital = start_hospital(tmp_path_factory.mktemp("backup") / "state", "Backup General")
    yield hospital
    hospital.stop()


@pytest.fixture(scope="module")
def before(domain, tmp_path_factory) -> dict:
    """What the domain holds before the backup: a DP evaluation charged and its result, a
    valid and a revoked token, a federation member, the data."""
    files = tmp_path_factory.mktemp("researchers")
    ada_file = domain.researcher_file(RESEARCHER, files / "ada.json")
    grace_file = domain.researcher_file(OTHER_RESEARCHER, files / "grace.json")
    revoked = json.loads(grace_file.read_text())["token"]
    domain.cli("token", "revoke", _jti(revoked), "--reason", "laptop lost")
    domain.cli("federation", "enable")
    domain.cli("federation", "members", "add", MEMBER, "--url", "https://royal.example.org:8081",
               "--public-key", key_to_text(generate_keypair()[1]))
    ada = connect(connection_file=ada_file)
    weights = {k: v.detach().numpy() for k, v in build_model("small_cnn").state_dict().items()}
    submission = submit_plan(ada, evaluate_private_xray_plan,
                             inputs=split_assets(ada, "xray", "test"),
                             constants={"weights": weights, "config": TrainingPlan(epochs=1).config(),
                                        "privacy": private_evaluation(1.0)},
                             reason="DP evaluation before the backup")
    domain.cli("review", "approve", submission.request_id)
    result = run_approved(ada, submission)
    admin = AdminClient(domain.state)
    (account,) = [a for a in admin.privacy_accounts(RESEARCHER) if a["dataset"] == "xray"]
    assert account["spent"] > 0
    return {"ada_file": ada_file, "revoked": revoked, "submission": submission,
            "result": result, "spent": account["spent"], "server_id": ada.id.no_dash,
            "identity": json.loads(domain.state.identity_path.read_text()),
            "users": {u.email for u in admin.users()},
            "members": admin.federation_members(), "data": _dataset_arrays(admin, "xray")}


class Load:
    """Issues, revokes and audits in a loop (and uploads a dataset once) until stopped;
    remembers when each completed."""

    def __init__(self, domain):
        self.admin, self.uploader = AdminClient(domain.state), AdminClient(domain.state)
        self.issued: list[tuple[float, str]] = []
        self.revoked: list[tuple[float, str]] = []
        self.audited: list[tuple[float, str]] = []
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._tokens),
                         threading.Thread(target=self._upload)]

    def _tokens(self) -> None:
        number = 0
        while not self._stop.is_set():
            try:
                _token, claims = self.admin.issue_token(OTHER_RESEARCHER, ttl="2h")
                self.issued.append((time.time(), claims["jti"]))
                if number % 2:
                    self.admin.revoke_token(claims["jti"], reason="load")
                    self.revoked.append((time.time(), claims["jti"]))
                self.admin.record("test.load", target=str(number))
                self.audited.append((time.time(), str(number)))
            except PneumoSyftError as exc:  # pragma: no cover - reported by the test
                self.errors.append(exc)
            number += 1

    def _upload(self) -> None:
        try:
            self.uploader.upload("synthetic", "xray-during", n=200, size=28, progress=False)
        except PneumoSyftError as exc:  # pragma: no cover - reported by the test
            self.errors.append(exc)

    def start(self, blob_dir: Path) -> None:
        """Start, and return once tokens are issued and the upload sends its blobs."""
        blobs = set(blob_dir.iterdir())
        for thread in self._threads:
            thread.start()
        deadline = time.time() + 120
        while (len(self.audited) < 3 or set(blob_dir.iterdir()) <= blobs) and not self.errors:
            assert time.time() < deadline, "the load did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        assert not self.errors, self.errors

    def done_before(self, moment: float, which: list) -> set[str]:
        return {what for when, what in which if when < moment}


@pytest.fixture(scope="module")
def archive(domain, before, passphrase_file, tmp_path_factory):
    """A backup taken under load; (path, when it began, the load, the CLI's output)."""
    path = tmp_path_factory.mktemp("archive") / "backup-general.pnbak"
    load = Load(domain)
    load.start(domain.state.blob_dir)
    began = time.time()
    result = domain.run("backup", "--to", str(path), "--passphrase-file", str(passphrase_file),
                        check=False)
    ended = time.time()
    load.stop()
    assert result.returncode == 0, result.stderr
    during = [when for when, _ in load.audited if began < when < ended]
    assert during, "no request of the load completed while the backup ran"
    return {"path": path, "began": began, "load": load, "stdout": result.stdout}


def test_the_backup_is_private_audited_and_leaves_nothing_behind(domain, archive):
    path = archive["path"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes()[:8] == b"PSYBAK\r\n"
    assert b"Backup General" not in path.read_bytes()  # encrypted, names and all
    digest = _sha256(path)
    assert digest in archive["stdout"]
    (created,) = [e for e in AuditLog(domain.state.root).read(action="backup.created")
                  if e["target"] == str(path)]
    assert created["sha256"] == digest and created["bytes"] == str(path.stat().st_size)
    assert created["actor"] == domain.state.load_config().admin_email
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary
    assert not list(domain.state.root.glob(".backup-*"))  # no staging left


def test_backup_refuses_bad_input_in_one_line_and_writes_nothing(domain, archive,
                                                                 passphrase_file, tmp_path):
    state = ("--state-dir", str(domain.state.root))
    target = tmp_path / "new.pnbak"
    loose = tmp_path / "loose-passphrase"
    loose.write_text(PASSPHRASE)
    loose.chmod(0o644)
    short = {PASSPHRASE_ENV: "too short"}
    audited = len(AuditLog(domain.state.root).read(action="backup.created"))
    for args, env, fragment in (
            (("--to", str(target)), {}, "no passphrase"),
            (("--to", str(target)), short, "shorter than 12 characters"),
            (("--to", str(target), "--passphrase-file", str(loose)), {}, "readable by others"),
            (("--to", str(target), "--passphrase-file", str(tmp_path / "nope")), {},
             "does not exist"),
            (("--to", str(archive["path"]), "--passphrase-file", str(passphrase_file)), {},
             "exists"),
            (("--to", str(tmp_path / "no" / "dir.pnbak"), "--passphrase-file",
              str(passphrase_file)), {}, "does not exist"),
            (("--to", str(domain.state.root / "inside.pnbak"), "--passphrase-file",
              str(passphrase_file)), {}, "inside the state directory"),
            (("--to", str(target), "--passphrase-file", str(passphrase_file), "--state-dir",
              str(tmp_path / "no-domain")), {}, "no domain in")):
        _refused(_cli("backup", *state, *args, env=env), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loose-passphrase"]
    assert not (domain.state.root / "inside.pnbak").exists()
    assert not list(domain.state.root.glob(".backup-*"))
    assert len(AuditLog(domain.state.root).read(action="backup.created")) == audited


def test_restore_refuses_a_wrong_passphrase_a_damaged_file_and_a_full_target(
        archive, passphrase_file, tmp_path):
    data = archive["path"].read_bytes()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    truncated, tampered, appended, foreign = (inputs / name for name in
                                              ("truncated", "tampered", "appended", "foreign"))
    truncated.write_bytes(data[:-100])
    middle = len(data) // 2
    tampered.write_bytes(data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:])
    appended.write_bytes(data + b"\0")
    foreign.write_bytes(os.urandom(4096))
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("someone's files")
    target = tmp_path / "restored"
    key = ("--passphrase-file", str(passphrase_file))
    for source, where, extra, env, fragment in (
            (archive["path"], target, (), {PASSPHRASE_ENV: "not the passphrase at all"},
             "wrong passphrase"),
            (truncated, target, key, {}, "truncated"),
            (tampered, target, key, {}, "altered"),
            (appended, target, key, {}, "authenticate"),
            (foreign, target, key, {}, "not a PneumoSyft backup"),
            (inputs / "missing", target, key, {}, "does not exist"),
            (archive["path"], full, key, {}, "is not empty"),
            (archive["path"], target, (*key, "--db-url", "postgresql://postgres@127.0.0.1/x"),
             {}, "applies only to a backup of a domain on PostgreSQL")):
        result = _cli("restore", "--from", str(source), "--state-dir", str(where),
                      "--no-progress", *extra, env=env)
        _refused(result, fragment)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "inputs"], fragment
    assert [p.name for p in full.iterdir()] == ["notes.txt"]


def test_kill_9_delete_restore_start_brings_back_the_same_domain(domain, before, archive,
                                                                 passphrase_file):
    state, load, began = domain.state, archive["load"], archive["began"]
    original = AuditLog(state.root).read()
    pid = state.read_pid()
    os.kill(pid, signal.SIGKILL)
    _wait_dead(pid)
    shutil.rmtree(state.root)

    result = _cli("restore", "--from", str(archive["path"]), "--state-dir", str(state.root),
                  "--passphrase-file", str(passphrase_file))
    assert result.returncode == 0, result.stderr
    assert "restored 'Backup General'" in result.stdout
    assert stat.S_IMODE(state.root.stat().st_mode) == 0o700
    for secret in (state.identity_path, state.admin_password_path, state.root / "tokens.json",
                   state.root / "privacy.sqlite3", state.keys_dir / "jwt_private.pem",
                   state.root / "audit.jsonl"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert not state.pid_path.exists() and not list(state.root.parent.glob(".state.restore-*"))

    # the audit log: the old one up to the snapshot, line for line, then the restore
    restored = AuditLog(state.root).read()
    kept, last = restored[:-1], restored[-1]
    assert kept == original[:len(kept)]
    assert last["action"] == "domain.restored" and last["sha256"] == _sha256(archive["path"])
    snapshot = datetime.fromisoformat(last["snapshot"]).timestamp()
    assert began - 1 <= snapshot <= time.time()
    before_backup = [e for e in original
                     if datetime.fromisoformat(e["time"]).timestamp() < began]
    assert kept[:len(before_backup)] == before_backup
    audited = {e["target"] for e in kept if e["action"] == "test.load"}
    assert load.done_before(began, load.audited) <= audited

    domain.start()
    admin = AdminClient(state)
    assert json.loads(state.identity_path.read_text()) == before["identity"]
    ada = connect(connection_file=before["ada_file"])  # her token is still valid
    assert ada.id.no_dash == before["server_id"]
    assert before["users"] <= {u.email for u in admin.users()}
    for name, array in _dataset_arrays(admin, "xray").items():
        np.testing.assert_array_equal(array, before["data"][name])
    again = run_approved(ada, before["submission"])  # the stored result, not a new run
    assert json.dumps(again, sort_keys=True, default=str) == \
        json.dumps(before["result"], sort_keys=True, default=str)
    (account,) = [a for a in admin.privacy_accounts(RESEARCHER) if a["dataset"] == "xray"]
    assert account["spent"] == pytest.approx(before["spent"])
    assert admin.federation_members() == before["members"]
    refused = requests.get(f"{domain.url}/api/v2/metadata", timeout=10,
                           headers={"Authorization": f"Bearer {before['revoked']}"})
    assert refused.status_code == 401 and refused.json() == {"error": "token revoked"}
    tokens = {t["jti"]: t for t in admin.tokens()}
    assert load.done_before(began, load.issued) <= set(tokens)
    assert all(tokens[jti]["revoked"] for jti in load.done_before(began, load.revoked))
    # the dataset uploaded during the backup is there whole, or not at all (recovery at
    # start removed the blobs the snapshot caught without their dataset)
    if "xray-during" in admin.datasets():
        assert _dataset_arrays(admin, "xray-during")["train_images"].shape[0] == 160
    # and the log goes on after the restore
    admin.record("test.after_restore")
    after = admin.audit()
    assert after[:len(restored)] == restored
    assert after[-1]["action"] == "test.after_restore"


def test_a_postgresql_domain_goes_through_pg_dump_and_pg_restore(tmp_path, passphrase_file):
    psycopg = pytest.importorskip("psycopg")
    admin_url = "postgresql://postgres@127.0.0.1:5432/postgres"
    names = [f"pneumosyft_backup_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            for name in names:
                conn.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server on 127.0.0.1:5432 ({exc})")
    source_url, target_url = (f"postgresql://postgres@127.0.0.1:5432/{n}" for n in names)
    restored = LocalDomain(tmp_path / "restored")
    try:
        domain = start_hospital(tmp_path / "state", "Postgres Backup",
                                extra_args=("--db-url", source_url, "--tls-self-signed"))
        try:
            ada_file = domain.researcher_file(RESEARCHER, tmp_path / "ada.json")
            data = _dataset_arrays(AdminClient(domain.state), "xray")
            domain.run("backup", "--to", str(tmp_path / "pg.pnbak"), "--passphrase-file",
                       str(passphrase_file))
        finally:
            domain.stop()
        result = _cli("restore", "--from", str(tmp_path / "pg.pnbak"), "--state-dir",
                      str(restored.state.root), "--db-url", target_url, "--passphrase-file",
                      str(passphrase_file))
        assert result.returncode == 0, result.stderr
        config = restored.state.load_config()
        assert config.db_url == target_url and "warning" not in result.stderr
        # the certificate generated into the state directory moved with it
        assert Path(config.extra["tls"]["cert"]) == restored.state.root / "tls" / "cert.pem"
        assert not (restored.state.db_dir / "domain.sqlite").exists()
        with psycopg.connect(target_url) as conn:
            tables = conn.execute("SELECT count(*) FROM information_schema.tables "
                                  "WHERE table_schema = 'public'").fetchone()[0]
        assert tables > 5
        restored.start()
        ada = connect(connection_file=ada_file)  # same port, keys, certificate: her file works
        assert "xray" in {d.name for d in ada.datasets.get_all()}
        for name, array in _dataset_arrays(AdminClient(restored.state), "xray").items():
            np.testing.assert_array_equal(array, data[name])
    finally:
        restored.stop()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for name in names:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")



def test_a_backup_passphrase_in_the_admins_environment_does_not_reach_the_server(monkeypatch):
    from domain_setup.admin.backup import PASSPHRASE_ENV
    from domain_setup.admin.lifecycle import server_environment

    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse battery staple")
    monkeypatch.setenv("PNEUMOSYFT_STATE_DIR", "/srv/pneumosyft")
    environment = server_environment()
    assert PASSPHRASE_ENV not in environment and "PNEUMOSYFT_STATE_DIR" in environment
