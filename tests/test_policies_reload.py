"""Edited policy files take effect on `policies reload`, for the gate and the review alike."""

from __future__ import annotations

import shutil

import pytest
import requests

from conftest import DATA_OWNER, PROJECT_ROOT, start_hospital

pytestmark = pytest.mark.domain


def _owner_reads_audit(domain, token: str) -> int:
    return requests.get(f"{domain.url}/pneumosyft/audit", timeout=10,
                        headers={"Authorization": f"Bearer {token}"}).status_code


def test_policy_edits_wait_for_reload_and_a_bad_edit_keeps_the_old_rules(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    domain = start_hospital(tmp_path / "state", "Reload General", upload=False,
                            extra_args=("--policies", str(policies)))
    try:
        token, _ = domain.admin.issue_token(DATA_OWNER, ttl="1h")
        assert _owner_reads_audit(domain, token) == 403
        permissions = policies / "permissions.yaml"
        original = permissions.read_text()
        permissions.write_text(original.replace(
            "upload_dataset, approve_requests, read_others_requests, read_private]",
            "upload_dataset, approve_requests, read_others_requests, read_private, read_audit]",
            1))
        # the domain keeps its snapshot; review refuses to judge by rules not in force
        assert _owner_reads_audit(domain, token) == 403
        review = domain.run("review", "list", check=False)
        assert review.returncode == 1 and "policies reload" in review.stderr
        assert "policies in force now" in domain.cli("policies", "reload")
        assert _owner_reads_audit(domain, token) == 200
        assert "(none)" in domain.cli("review", "list")
        # a malformed edit is refused with file:line and the rules in force stay
        permissions.write_text(permissions.read_text().replace("allow_signup: false",
                                                               "allow_sign_up: false"))
        refused = domain.run("policies", "reload", check=False)
        assert refused.returncode == 1 and "permissions.yaml:" in refused.stderr
        assert _owner_reads_audit(domain, token) == 200
        actions = [(e["action"], e["outcome"]) for e in domain.admin.audit(action="policies")]
        assert actions == [("policies.reload", "ok"), ("policies.reload", "refused")]
    finally:
        domain.stop()


def test_policies_show_names_the_folder_and_digest(hospital):
    shown = hospital.cli("policies", "show")
    assert str(hospital.state.root.parent / "policies") in shown and "sha256" in shown
