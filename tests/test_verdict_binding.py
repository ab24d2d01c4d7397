"""The verdict binds every client: a stock syft 0.9.5 client, following PySyft's tutorial,
cannot approve custom code without the domain's override, and every approval is audited
with the code's hash."""

from __future__ import annotations

import pytest

from common import syft_compat
from common.syft_requests import get_request, request_status
from conftest import DATA_OWNER
from domain_setup.admin.accounts import account_password
from scientist import TrainingPlan
from scientist.plans import train_xray_plan
from scientist.submission import split_assets, submit_plan, upload_input

pytestmark = pytest.mark.domain


def first_five_images(images, labels):
    return {"images": images[:5]}


def changed_train_plan(images, labels, config, initial_weights):
    """Train inside the domain; return the weights and per-epoch loss/accuracy."""
    from common.training import train

    result = train(images, labels, model=config["model"], epochs=config["epochs"],
                   lr=config["lr"], batch_size=config["batch_size"], seed=config["seed"],
                   initial_weights=initial_weights or None)
    return {"weights": result["weights"], "history": result["history"],
            "n_samples": len(images)}


@pytest.fixture(scope="module")
def owner(hospital):
    """The data owner's stock syft client, logged in the way PySyft's tutorials do."""
    from syft.client.client import HTTPConnection

    token, _ = hospital.admin.issue_token(DATA_OWNER, ttl="1h")
    connection = HTTPConnection(url=hospital.url, headers={"Authorization": f"Bearer {token}"})
    with syft_compat.muted():
        return connection.get_client_type().unwrap()(connection=connection).login(
            email=DATA_OWNER, password=account_password(hospital.state, DATA_OWNER))


def _submit(client, plan, constants=None):
    train = split_assets(client, "xray", "train")
    return submit_plan(client, plan, inputs=train, constants=constants or {},
                       reason="verdict binding test")


def test_stock_client_cannot_approve_custom_code_without_the_override(hospital, ada, owner):
    submission = _submit(ada, first_five_images)
    with syft_compat.muted():
        request = get_request(owner, submission.request_id)
        try:
            outcome = request.approve()
        except Exception as exc:  # syft raises or returns a SyftError, by version
            outcome = exc
    assert "custom code: needs an admin's review" in syft_compat.error_text(outcome)
    assert request_status(get_request(owner, submission.request_id)) == "pending"
    refusals = [e for e in hospital.admin.audit(action="request.approve")
                if e["target"] == submission.request_id]
    assert refusals and refusals[-1]["outcome"] == "refused"
    assert refusals[-1]["actor"] == DATA_OWNER and len(refusals[-1]["code_sha256"]) == 64


def test_with_an_override_and_a_reason_the_approval_goes_through_and_is_audited(hospital, ada):
    submission = _submit(ada, first_five_images)
    hospital.cli("review", "approve", submission.request_id, "--override", "--reason",
                 "the ethics board allowed five images")
    entries = [e for e in hospital.admin.audit(action="request.override")
               if e["target"] == submission.request_id]
    assert entries and entries[-1]["reason"] == "the ethics board allowed five images"
    assert entries[-1]["plan"] == "custom" and len(entries[-1]["code_sha256"]) == 64


def test_a_vetted_plan_with_one_changed_line_is_custom_and_auto_leaves_it_pending(hospital, ada):
    config = {"config": TrainingPlan(epochs=1).config(), "initial_weights": {}}
    changed = _submit(ada, changed_train_plan, config)
    vetted = _submit(ada, train_xray_plan, config)
    shown = hospital.cli("review", "show", changed.request_id)
    assert "custom code: needs an admin's review" in shown and "sandbox   timeout" in shown
    outcomes = hospital.cli("review", "auto", "--approve-compliant")
    assert f"{changed.request_id}  {changed.func_name}  left pending (custom code" in outcomes
    assert f"{vetted.request_id}  {vetted.func_name}  approved" in outcomes
    approvals = [e for e in hospital.admin.audit(action="request.approve")
                 if e["target"] == vetted.request_id]
    assert approvals[-1]["outcome"] == "ok" and approvals[-1]["plan"] == "train"
    hospital.cli("review", "deny", changed.request_id, "--reason", "test over")


def test_an_override_needs_a_reason_and_a_real_request(hospital):
    import requests

    token, _ = hospital.admin.issue_token(DATA_OWNER, ttl="1h")
    url = f"{hospital.url}/pneumosyft/requests/{'0' * 32}/override"
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.post(url, json={"reason": "x"}, headers=headers, timeout=10).status_code == 404
    assert requests.post(url, json={"reason": " "}, headers=headers, timeout=10).status_code == 400


def test_a_researcher_cannot_submit_a_request_of_her_own_making(hospital, ada):
    """request.submit would let a request carry any change (permissions on assets, object
    mutations) that an approval or a denial applies with admin rights: refused at the gate."""
    from syft.service.request.request import SubmitRequest

    with syft_compat.muted(), pytest.raises(Exception) as refused:
        ada.api.services.request.submit(request=SubmitRequest(changes=[]))
    assert "403" in str(refused.value)  # the stock client shows the status only
    reasons = [e.get("reason", "") for e in hospital.admin.audit(action="auth", since="5m")
               if e["actor"] == "ada@pneumosyft-research.org"]
    assert "role data_scientist may not call request.submit (not in its syft_paths in " \
           "permissions.yaml)" in reasons




@pytest.mark.parametrize("path, kwargs", [
    # reads any account's execution outputs with the server's own credentials
    ("output.get_by_user_code_id", {"user_code_id": "0" * 32}),
    # reads an object of any store type by id
    ("migration._get_object", {"uid": "0" * 32, "object_type": dict}),
])
def test_syft_paths_that_read_with_server_rights_are_refused_to_researchers(hospital, ada,
                                                                            path, kwargs):
    from syft.types.uid import UID

    service, method = path.split(".")
    kwargs = {k: UID(v) if k in ("uid", "user_code_id") else v for k, v in kwargs.items()}
    with syft_compat.muted(), pytest.raises(Exception) as refused:
        getattr(getattr(ada.api.services, service), method)(**kwargs)
    assert "403" in str(refused.value)
    reasons = [e.get("reason", "") for e in hospital.admin.audit(action="auth", since="5m")
               if e["actor"] == "ada@pneumosyft-research.org"]
    assert f"role data_scientist may not call {path} (not in its syft_paths in " \
           "permissions.yaml)" in reasons


def test_custom_policy_code_never_runs_in_the_server(hospital, ada):
    import syft as sy

    from policy_attack import ExfiltratingPolicy

    train = split_assets(ada, "xray", "train")
    with syft_compat.muted():
        function = sy.syft_function(
            input_policy=sy.MixedInputPolicy(client=ada, images=train["images"]),
            output_policy=ExfiltratingPolicy())(first_five_images_only)
        request = ada.code.request_code_execution(function, reason="custom policy")
    request_id = str(request.id.no_dash)
    shown = hospital.cli("review", "show", request_id)
    assert "output policy must be SingleExecutionExactOutput" in shown
    hospital.cli("review", "approve", request_id, "--override", "--reason", "policy test")
    with syft_compat.muted(), pytest.raises(Exception) as refused:
        result = ada.api.services.code.call(uid=request.code_id, images=train["images"])
        if syft_compat.is_syft_error(result):
            raise RuntimeError(syft_compat.error_text(result))
    # syft wraps our refusal ("custom policy classes are not run on this domain") in its own
    # message; the policy's code, which would return /etc/hostname, never ran
    assert str(refused.value).startswith("Exception loading code.")
    assert "stolen" not in str(refused.value)


def first_five_images_only(images):
    return {"images": images[:5]}


def echo(x):
    return {"x": x}


@pytest.fixture(scope="module")
def grace(hospital):
    from conftest import OTHER_RESEARCHER
    from scientist import connect

    return connect(connection_file=hospital.researcher_file(OTHER_RESEARCHER))


def test_another_accounts_object_never_becomes_an_input_even_with_an_override(hospital, ada,
                                                                             grace):
    """syft runs an approved request's inputs with the domain's rights: Grace naming Ada's
    uploaded object would read it. syft accepts the submission; the domain refuses it."""
    import numpy as np

    adas = upload_input(ada, np.arange(10.0))
    stolen = submit_plan(grace, echo, inputs={"x": adas}, constants={}, reason="read ada's")
    with pytest.raises(Exception) as refused:
        hospital.cli("review", "approve", stolen.request_id, "--override", "--reason", "test")
    assert "input(s) x are objects that grace@lung-imaging-lab.ac.uk cannot read" \
        in str(refused.value)
    refusals = [e for e in hospital.admin.audit(action="request.approve")
                if e["target"] == stolen.request_id]
    assert refusals[-1]["outcome"] == "refused" and "another account" in refusals[-1]["reason"]
    # Ada's own object, with an override, is approved and runs
    own = submit_plan(ada, echo, inputs={"x": adas}, constants={}, reason="my own object")
    hospital.cli("review", "approve", own.request_id, "--override", "--reason", "own object")
    assert "approved" in hospital.cli("review", "show", own.request_id)


def test_a_request_of_several_changes_is_neither_approved_nor_denied(hospital, ada, owner):
    """A request that carries more than one change (made here by the root admin, who may
    call request.submit) is refused by the domain, whichever client applies it."""
    from syft.service.request.request import SubmitRequest

    submission = _submit(ada, first_five_images)
    admin = hospital.admin.syft_client()
    with syft_compat.muted():
        change = get_request(admin, submission.request_id).changes[0]
        bundle = admin.api.services.request.submit(request=SubmitRequest(changes=[change, change]))
        bundle = get_request(owner, str(bundle.id.no_dash))
        outcomes = []
        for act in (bundle.approve, lambda: bundle.deny(reason="no")):
            try:
                outcomes.append(syft_compat.error_text(act()))
            except Exception as exc:  # syft raises or returns a SyftError, by version
                outcomes.append(syft_compat.error_text(exc))
    for outcome in outcomes:
        assert "holds 2 change(s) of kinds UserCodeStatusChange" in outcome, outcome
    assert request_status(get_request(owner, submission.request_id)) == "pending"
