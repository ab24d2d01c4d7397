"""A domain keeps users, datasets, requests, approvals, results and tokens across restarts."""

from __future__ import annotations

import json
import os
import signal
import stat
import time

import numpy as np
import pytest
import requests

from common.errors import DomainError
from conftest import RESEARCHER, start_hospital
from scientist import TrainingPlan, connect
from scientist.plans import train_xray_plan
from scientist.submission import Submission, request_status, run_approved, split_assets, submit_plan

pytestmark = pytest.mark.domain


def _wait_dead(pid: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} still alive")


def test_everything_survives_stop_and_kill_9(tmp_path):
    domain = start_hospital(tmp_path / "state", "Restart Royal")
    try:
        state = domain.state
        identity_before = json.loads(state.identity_path.read_text())
        for secret in (state.identity_path, state.admin_password_path, state.connection_path,
                       state.account_passwords_path, state.root / "privacy.sqlite3"):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
        assert stat.S_IMODE(state.root.stat().st_mode) == 0o700

        connection = domain.researcher_file(RESEARCHER)
        ada = connect(connection_file=connection)
        train = split_assets(ada, "xray", "train")
        plan = TrainingPlan(epochs=1)
        approved = submit_plan(ada, train_xray_plan, inputs=train,
                               constants={"config": plan.config(), "initial_weights": {}},
                               reason="before restart")
        pending = submit_plan(ada, train_xray_plan, inputs=train,
                              constants={"config": plan.config(), "initial_weights": {}},
                              reason="still pending")
        domain.cli("review", "approve", approved.request_id)
        first = run_approved(ada, approved)
        revoked_file = domain.researcher_file(RESEARCHER, tmp_path / "revoked.json")
        revoked = json.loads(revoked_file.read_text())

        # kill -9: no chance to clean up
        pid = state.read_pid()
        os.kill(pid, signal.SIGKILL)
        _wait_dead(pid)
        domain.start()
        # graceful stop and start again
        domain.stop()
        domain.start()

        assert json.loads(state.identity_path.read_text()) == identity_before
        ada = connect(connection_file=connection)  # Ada's token is still valid
        datasets = {d.name: d for d in ada.datasets.get_all()}
        assert set(datasets["xray"].assets.keys()) >= {"train_images", "test_labels"}
        assert request_status(ada, approved)[0] == "approved"
        assert request_status(ada, pending)[0] == "pending"
        listing = domain.cli("review", "list", "--all")
        assert approved.request_id in listing and pending.request_id in listing
        pending_only = domain.cli("review", "list")  # from the index the start rebuilt
        assert pending.request_id in pending_only and approved.request_id not in pending_only
        again = run_approved(ada, Submission(approved.request_id, approved.func_name, train))
        for name, array in first["weights"].items():
            np.testing.assert_array_equal(again["weights"][name], array)
        emails = {u.email for u in domain_admin_users(domain)}
        assert RESEARCHER in emails

        # a token revoked before a restart stays revoked after it
        domain.cli("token", "revoke", _jti_of(revoked["token"]), "--reason", "test")
        domain.stop()
        domain.start()
        response = requests.get(f"{domain.url}/api/v2/metadata",
                                headers={"Authorization": f"Bearer {revoked['token']}"}, timeout=10)
        assert response.status_code == 401
        assert response.json() == {"error": "token revoked"}
    finally:
        domain.stop()


def _jti_of(token: str) -> str:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})["jti"]


def domain_admin_users(domain):
    from domain_setup.admin.session import AdminSession

    return AdminSession(domain.state).client().api.services.user.get_all()


def test_root_default_password_is_refused(hospital):
    from domain_setup.admin.session import AdminSession

    session = AdminSession(hospital.state)
    assert session.email != "info@openmined.org"
    from common.connection import connect_client

    with pytest.raises(DomainError, match="login refused"):
        connect_client(hospital.url, token=session.token, email=session.email,
                       password="changethis")
    # the syft default account does not exist, so no token can even be issued for it
    result = hospital.run("token", "issue", "--email", "info@openmined.org", check=False)
    assert result.returncode == 1 and "no account for info@openmined.org" in result.stderr
    password = hospital.state.admin_password()
    assert password != "changethis" and len(password) >= 24
