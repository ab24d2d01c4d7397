"""The admin CLI on bad input: one clear line, a non-zero exit, and nothing half-written."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest

from conftest import ACCOUNTS_YAML, PROJECT_ROOT, start_hospital
from demos.local_domain import LocalDomain, free_port

pytestmark = pytest.mark.domain

COMMANDS = [["start"], ["stop"], ["status"], ["upload"], ["accounts", "apply"], ["token", "issue"],
            ["token", "list"], ["token", "revoke"], ["review", "list"], ["review", "show"],
            ["review", "approve"], ["review", "deny"], ["review", "auto"], ["federation", "enable"],
            ["federation", "members", "list"], ["federation", "members", "add"],
            ["federation", "members", "remove"], ["policies", "show"], ["policies", "reload"],
            ["audit"]]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "domain_setup", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)


def _one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command):
    result = _cli(*command, "--help")
    assert result.returncode == 0 and "usage: python -m domain_setup" in result.stdout


def test_start_refuses_without_the_sandbox_and_says_how_to_install_it(tmp_path):
    """No bubblewrap on the server's PATH: the domain does not come up at all."""
    result = subprocess.run(
        [sys.executable, "-m", "domain_setup", "start", "--name", "No Sandbox", "--port",
         str(free_port()), "--state-dir", str(tmp_path / "state")], cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=300, env={"PATH": str(tmp_path)})
    _one_line_error(result, "the sandbox for researcher code is unavailable: bubblewrap "
                            "(bwrap) not found: apt-get install bubblewrap")


def test_malformed_policy_file_stops_start_and_writes_nothing(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    text = (policies / "permissions.yaml").read_text().replace("allow_signup: false",
                                                              "allow_sign_up: false")
    (policies / "permissions.yaml").write_text(text)
    line = text.splitlines().index("allow_sign_up: false") + 1
    state = tmp_path / "state"
    result = _cli("start", "--name", "Bad Policies", "--port", str(free_port()),
                  "--state-dir", str(state), "--policies", str(policies))
    _one_line_error(result, f"permissions.yaml:{line}:")
    assert not state.exists()


@pytest.mark.parametrize("args, fragment", [
    (["--name", "../etc", "--port", "8099"], "invalid domain name"),
    (["--name", "Fine", "--port", "80"], "outside 1024-65535"),
    (["--name", "Fine", "--port", "8099", "--db-url", "mysql://x@y/z"], "invalid --db-url"),
    (["--port", "8099"], "needs --name and --port"),
])
def test_bad_start_options(tmp_path, args, fragment):
    state = tmp_path / "state"
    _one_line_error(_cli("start", *args, "--state-dir", str(state)), fragment)
    assert not state.exists()


def test_port_in_use_is_refused(hospital, tmp_path):
    port = hospital.state.load_config().port
    result = _cli("start", "--name", "Second", "--port", str(port), "--state-dir",
                  str(tmp_path / "state"))
    _one_line_error(result, f"port {port}")


def test_status_of_a_stopped_domain(tmp_path):
    state = tmp_path / "never"
    _one_line_error(_cli("status", "--state-dir", str(state)), "no domain in")


def _datasets(domain: LocalDomain) -> set[str]:
    from domain_setup.admin.session import AdminSession

    return {d.name for d in AdminSession(domain.state).client().datasets.get_all()}


def _write_npz(path, **overrides):
    arrays = {f"{split}_images": np.zeros((6, 28, 28), np.uint8) for split in ("train", "val", "test")}
    arrays.update({f"{split}_labels": np.array([[0], [1]] * 3, np.uint8)
                   for split in ("train", "val", "test")})
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_bad_data_files_upload_nothing(hospital, tmp_path):
    before = _datasets(hospital)
    cases = {
        "missing key": (_write_npz(tmp_path / "a.npz", test_labels=None), "test_labels"),
        "bad labels": (_write_npz(tmp_path / "b.npz", train_labels=np.full((6, 1), 7, np.uint8)),
                       "label"),
        "not a zip": (tmp_path / "c.npz", "c.npz"),
    }
    (tmp_path / "c.npz").write_bytes(b"this is not a zip file")
    for name, (path, fragment) in cases.items():
        result = hospital.attempt("upload", f"pneumoniamnist:{path}", "--name", "bad")
        _one_line_error(result, fragment)
    folder = tmp_path / "kermany"
    for split in ("train", "test"):
        for label in ("NORMAL", "PNEUMONIA"):
            (folder / split / label).mkdir(parents=True)
    from PIL import Image

    for split in ("train", "test"):
        for label in ("NORMAL", "PNEUMONIA"):
            Image.new("L", (40, 40), 90).save(folder / split / label / "ok.jpeg")
    corrupt = folder / "train" / "PNEUMONIA" / "person1_bacteria_1.jpeg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    result = hospital.attempt("upload", f"folder:{folder}", "--name", "bad")
    _one_line_error(result, "person1_bacteria_1.jpeg")
    _one_line_error(hospital.attempt("upload", "ftp:somewhere", "--name", "bad"), "ftp")
    _one_line_error(hospital.attempt("upload", "synthetic", "--name", "Bad Name!"),
                    "invalid dataset name")
    _one_line_error(hospital.run("upload", "synthetic", "--name", "xray", *("--n", "100"),
                                 check=False), "already exists")
    assert _datasets(hospital) == before


def test_good_npz_and_kermany_uploads(hospital, tmp_path):
    path = _write_npz(tmp_path / "pneumoniamnist.npz")
    out = hospital.cli("upload", f"pneumoniamnist:{path}", "--name", "pmnist", "--size", "28")
    assert "uploaded 'pmnist'" in out and "MB/s" in out
    assert "pmnist" in _datasets(hospital)
    again = hospital.cli("upload", f"pneumoniamnist:{path}", "--name", "pmnist", "--size", "28",
                         "--replace")
    assert "uploaded 'pmnist'" in again
    assert sorted(_datasets(hospital)).count("pmnist") == 1


def test_malformed_accounts_file_changes_nothing(hospital, tmp_path):
    bad = tmp_path / "accounts.yaml"
    bad.write_text("accounts:\n  - name: Eve\n    email: eve@hospital.local\n    role: admin\n")
    _one_line_error(hospital.attempt("accounts", "apply", str(bad)), "accounts.yaml:3:")
    unknown_role = tmp_path / "roles.yaml"
    unknown_role.write_text("accounts:\n  - name: Eve\n    email: eve@evil-corp.com\n"
                            "    role: superuser\n")
    _one_line_error(hospital.attempt("accounts", "apply", str(unknown_role)),
                    "roles.yaml:4:")
    from domain_setup.admin.session import AdminSession

    emails = {u.email for u in AdminSession(hospital.state).client().api.services.user.get_all()}
    assert not any(e.startswith("eve@") for e in emails)


def test_federation_members_are_added_listed_removed_and_bad_ones_refused(hospital):
    """The admin keeps the member list; every bad input is a one-line error and changes
    nothing; every change is audited."""
    from common.sealing import generate_keypair, key_to_text

    key = key_to_text(generate_keypair()[1])
    added = hospital.cli("federation", "members", "add", "County General", "--url",
                         "http://10.0.0.3:8081", "--public-key", key)
    assert "County General" in added and key in added
    for args, fragment in (
            (("Bad Url", "--url", "ftp://x", "--public-key", key), "http(s)://HOST:PORT"),
            (("Bad Key", "--url", "http://x:1", "--public-key", "nope"),
             "aggregation public key"),
            (("County General", "--url", "http://x:1", "--public-key",
              key_to_text(generate_keypair()[1])), "same name"),
            (("Twin", "--url", "http://x:1", "--public-key", key), "same aggregation key")):
        result = hospital.attempt("federation", "members", "add", *args)
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
        assert fragment in result.stderr, result.stderr
    assert hospital.cli("federation", "members", "list").count("\n") == 2  # header + one
    hospital.cli("federation", "members", "remove", "county general")
    missing = hospital.attempt("federation", "members", "remove", "County General")
    assert missing.returncode == 1 and "no member called" in missing.stderr
    assert "(none)" in hospital.cli("federation", "members", "list")
    actions = [e["action"] for e in hospital.admin.audit(action="federation.member.add")]
    assert actions and hospital.admin.audit(action="federation.member.remove")


def test_accounts_apply_is_idempotent(hospital):
    out = hospital.cli("accounts", "apply", str(ACCOUNTS_YAML))
    assert "created" not in out and "unchanged" in out


def test_postgresql_database_survives_restart(tmp_path):
    psycopg = pytest.importorskip("psycopg")
    name = f"pneumosyft_test_{uuid.uuid4().hex[:8]}"
    admin_url = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server on 127.0.0.1:5432 ({exc})")
    db_url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        domain = start_hospital(tmp_path / "state", "Postgres General",
                                extra_args=("--db-url", db_url))
        try:
            assert "database postgresql" in domain.cli("status")
            domain.stop()
            domain.start()
            assert "xray" in _datasets(domain)
            with psycopg.connect(db_url) as conn:
                tables = conn.execute("SELECT count(*) FROM information_schema.tables "
                                      "WHERE table_schema = 'public'").fetchone()[0]
            assert tables > 5
            assert not (domain.state.db_dir / "domain.sqlite").exists()
        finally:
            domain.stop()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
