"""The role-based access matrix of a live domain, over HTTP, cell by cell.

EXPECTED below is the whole matrix: (role, action) -> allowed. Each cell performs the
action as that role and asserts both the outcome (allowed, or refused with HTTP 401/403
or a syft permission error) and its effect, seen by the root admin (present when
allowed, absent when refused). Syft calls that the client's API hides from a role are
sent anyway, as signed calls, so that the server decides, never the client.

Roles: anonymous (no token: the root admin's own syft key, without any token, so
that only the gate can refuse it), data scientist (Ada; Grace is the other researcher
whose work she tries to reach), data owner, admin (the root admin of connection.json).
"""

from __future__ import annotations

import contextlib
import io
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import pytest
import requests

from common.connection import auth_headers, connect_client
from common.secure_files import read_json
from conftest import DATA_OWNER, OTHER_RESEARCHER, RESEARCHER
from domain_setup.admin.session import AdminSession
from domain_setup.server.audit import AuditLog
from domain_setup.server.tokens import TokenAuthority
from scientist.submission import Submission, run_approved, submit_plan

pytestmark = pytest.mark.domain

ANON, DS, DO, ADMIN = "anonymous", "data_scientist", "data_owner", "admin"
ROLES = (ANON, DS, DO, ADMIN)
TIMEOUT = 10

# -- the matrix ----------------------------------------------------------------------------
EXPECTED: dict[tuple[str, str], bool] = {
    (ANON, "list_datasets"): False,         (DS, "list_datasets"): True,
    (DO, "list_datasets"): True,            (ADMIN, "list_datasets"): True,
    (ANON, "read_mock"): False,             (DS, "read_mock"): True,
    (DO, "read_mock"): True,                (ADMIN, "read_mock"): True,
    (ANON, "read_private"): False,          (DS, "read_private"): False,
    (DO, "read_private"): True,             (ADMIN, "read_private"): True,
    (ANON, "upload_dataset"): False,        (DS, "upload_dataset"): False,
    (DO, "upload_dataset"): True,           (ADMIN, "upload_dataset"): True,
    (ANON, "create_user"): False,           (DS, "create_user"): False,
    (DO, "create_user"): False,             (ADMIN, "create_user"): True,
    (ANON, "change_role"): False,           (DS, "change_role"): False,
    (DO, "change_role"): False,             (ADMIN, "change_role"): True,
    # permissions.yaml says allow_signup: false -> refused for every role, by either path
    (ANON, "enable_signup"): False,         (DS, "enable_signup"): False,
    (DO, "enable_signup"): False,           (ADMIN, "enable_signup"): False,
    (ANON, "enable_signup_by_update"): False, (DS, "enable_signup_by_update"): False,
    (DO, "enable_signup_by_update"): False, (ADMIN, "enable_signup_by_update"): False,
    (ANON, "submit_code"): False,           (DS, "submit_code"): True,
    (DO, "submit_code"): True,              (ADMIN, "submit_code"): True,
    (ANON, "approve_own_request"): False,   (DS, "approve_own_request"): False,
    (DO, "approve_own_request"): True,      (ADMIN, "approve_own_request"): True,
    (ANON, "approve_others_request"): False, (DS, "approve_others_request"): False,
    (DO, "approve_others_request"): True,   (ADMIN, "approve_others_request"): True,
    (ANON, "read_others_requests"): False,  (DS, "read_others_requests"): False,
    (DO, "read_others_requests"): True,     (ADMIN, "read_others_requests"): True,
    (ANON, "read_others_results"): False,   (DS, "read_others_results"): False,
    (DO, "read_others_results"): True,      (ADMIN, "read_others_results"): True,
    (ANON, "issue_tokens"): False,          (DS, "issue_tokens"): False,
    (DO, "issue_tokens"): False,            (ADMIN, "issue_tokens"): True,
    (ANON, "revoke_tokens"): False,         (DS, "revoke_tokens"): False,
    (DO, "revoke_tokens"): False,           (ADMIN, "revoke_tokens"): True,
    (ANON, "read_audit"): False,            (DS, "read_audit"): False,
    (DO, "read_audit"): False,              (ADMIN, "read_audit"): True,
}

# Cells where the product is known to disagree with EXPECTED (strict: fixing it fails here).
KNOWN_PRODUCT_BUGS: dict[tuple[str, str], str] = {}


# -- classifying what syft did ------------------------------------------------------------------
REFUSAL_WORDS = re.compile(r"permission|not allowed|no access|unauthori[sz]ed|denied|not found",
                           re.IGNORECASE)
HTTP_CODE = re.compile(r"returned with code (\d{3})")


@dataclass
class Outcome:
    allowed: bool
    how: str  # "ok", "HTTP 401", "HTTP 403", "syft: <message>", "no API method"
    value: Any = None


def classify(attempt: Callable[[], Any]) -> Outcome:
    """Allowed or refused, whichever way syft or the gate said it; anything else fails.

    Refusals come as: an HTTP 401/403 (requests.ConnectionError from the syft client,
    sometimes wrapped in a SyftException, or our own JSON response), a SyftException or
    returned SyftError with a permission message (syft hides others' objects as "not
    found"), None from `asset.data` with a printed error, or an AttributeError for an API
    method the role's API does not have.
    """
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            value = attempt()
    except Exception as exc:  # noqa: BLE001 - every kind is classified below or re-raised
        return _refusal(exc)
    if isinstance(value, requests.Response):
        if value.status_code == 200:
            return Outcome(True, "ok", value)
        if value.status_code in (401, 403):
            assert len(value.text.splitlines()) == 1 and set(value.json()) == {"error"}, value.text
            return Outcome(False, f"HTTP {value.status_code}")
        raise AssertionError(f"neither allowed nor refused: HTTP {value.status_code} {value.text}")
    if type(value).__name__ == "SyftError":
        if REFUSAL_WORDS.search(value.message):
            return Outcome(False, f"syft: {value.message.splitlines()[0]}")
        raise AssertionError(f"neither allowed nor refused: {value.message}")
    if value is None and REFUSAL_WORDS.search(printed.getvalue()):
        return Outcome(False, f"syft: {printed.getvalue().strip().splitlines()[0]}")
    return Outcome(True, "ok", value)


def _refusal(exc: Exception) -> Outcome:
    from syft.types.errors import SyftException

    text = str(exc)
    code = HTTP_CODE.search(text)
    if code:
        if code.group(1) in ("401", "403"):
            return Outcome(False, f"HTTP {code.group(1)}")
        raise AssertionError(f"neither allowed nor refused: HTTP {code.group(1)}") from exc
    if isinstance(exc, AttributeError) and "may not have permission" in text:
        return Outcome(False, "no API method")
    message = getattr(exc, "public_message", None) or text
    if isinstance(exc, SyftException) and REFUSAL_WORDS.search(message):
        return Outcome(False, f"syft: {message.strip().splitlines()[0]}")
    raise AssertionError(f"neither allowed nor refused: {type(exc).__name__}: {text}") from exc


# -- talking to syft -----------------------------------------------------------------------------
def quiet() -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(io.StringIO())


def svc(client: Any, path: str, **kwargs: Any) -> Any:
    """Call syft service `path` through the client's API, or, when the role's API does not
    offer it, as a raw signed call: the server must refuse it, not the client."""
    if path not in client.api.endpoints:  # (asking the API for it would refetch the API)
        from syft.client.api import SyftAPICall

        call = SyftAPICall(server_uid=client.api.server_uid, path=path, args=[], kwargs=kwargs,
                           blocking=True)
        return client.api.make_call(call)
    method = client.api.services
    for part in path.split("."):
        method = getattr(method, part)
    return method(**kwargs)


def count_labels(labels):
    """The code every cell submits: harmless, quick, and it returns an aggregate."""
    return {"n_samples": len(labels)}


def submit(client: Any, asset: Any, name: str) -> Any:
    import syft as sy

    function = sy.syft_function(input_policy=sy.MixedInputPolicy(client=client, labels=asset),
                                output_policy=sy.SingleExecutionExactOutput(),
                                name=name)(count_labels)
    return client.code.request_code_execution(function, reason="access matrix probe")


def tiny_dataset(name: str) -> Any:
    import syft as sy

    dataset = sy.Dataset(name=name, summary="access matrix probe", description="four numbers")
    dataset.add_asset(sy.Asset(name="numbers", data=np.arange(4), mock=np.zeros(4, dtype=int)))
    return dataset


def unique(label: str) -> str:
    return f"matrix_{label}_{secrets.token_hex(3)}"


# -- the domain, its actors and their views ----------------------------------------------------
@dataclass
class Actor:
    role: str
    email: str
    client: Any  # whose syft key acts; anonymous: the root admin's, sent without a token
    token: str | None
    asset: Any  # this actor's handle on xray/train_labels

    @property
    def headers(self) -> dict:
        return auth_headers(self.token) if self.token else {}


@dataclass
class Matrix:
    url: str
    obs: Any  # the root admin's client: it checks every effect
    admin_token: str
    authority: TokenAuthority
    audit: AuditLog
    actors: dict[str, Actor]
    grace: Any
    grace_asset: Any
    grace_request_id: Any = None
    grace_code_id: Any = None
    grace_output_id: Any = None
    grace_result: Any = None
    expected_mock: Any = None
    expected_private: Any = None
    users_before: set = field(default_factory=set)
    datasets_before: set = field(default_factory=set)

    def users(self) -> dict[str, Any]:
        with quiet():
            return {u.email: u for u in svc(self.obs, "user.get_all")}

    def dataset_names(self) -> set[str]:
        with quiet():
            return {d.name for d in svc(self.obs, "dataset.get_all")}

    def signup_enabled(self) -> bool:
        metadata = requests.get(f"{self.url}/api/v2/metadata",
                                headers=auth_headers(self.admin_token), timeout=TIMEOUT).json()
        with quiet():
            stored = svc(self.obs, "settings.get").signup_enabled
        return bool(metadata["signup_enabled"] or stored)

    def request_status(self, request_id: Any) -> str:
        with quiet():
            request = svc(self.obs, "request.get_by_uid", uid=request_id)
            return request.status.name.lower()


@contextlib.contextmanager
def acting(actor: Actor):
    """Run as `actor`: for anonymous, every connection of the admin's key loses its token."""
    if actor.token is not None:
        yield
        return
    from syft.client.api import APIRegistry

    api = actor.client.api
    registered = APIRegistry.api_for(api.server_uid, api.signing_key.verify_key).unwrap()
    connections = {id(c): c for c in (actor.client.connection, api.connection,
                                      registered.connection)}
    saved = {key: c.headers for key, c in connections.items()}
    for c in connections.values():
        c.headers = {}
    try:
        yield
    finally:
        for key, c in connections.items():
            c.headers = saved[key]


def _xray_labels(client: Any) -> Any:
    with quiet():
        return next(d for d in client.datasets.get_all() if d.name == "xray").assets["train_labels"]


@pytest.fixture(scope="module")
def matrix(hospital, ada, ada_connection) -> Matrix:
    state = hospital.state
    session = AdminSession(state)
    with quiet():
        obs = session.client()
    passwords = read_json(state.account_passwords_path)

    def login(email: str) -> tuple[Any, str]:
        token = session.request("POST", "/pneumosyft/tokens",
                                json={"email": email, "ttl": "1h"})["token"]
        with quiet():
            return connect_client(hospital.url, token=token, email=email,
                                  password=passwords[email]), token

    owner, owner_token = login(DATA_OWNER)
    grace, _ = login(OTHER_RESEARCHER)
    obs_asset = _xray_labels(obs)
    m = Matrix(url=hospital.url, obs=obs, admin_token=session.token,
               authority=TokenAuthority.load(state.root), audit=AuditLog(state.root),
               grace=grace,
               grace_asset=_xray_labels(grace), actors={
                   ANON: Actor(ANON, "", obs, None, obs_asset),
                   DS: Actor(DS, RESEARCHER, ada, read_json(ada_connection)["token"],
                             _xray_labels(ada)),
                   DO: Actor(DO, DATA_OWNER, owner, owner_token, _xray_labels(owner)),
                   ADMIN: Actor(ADMIN, session.email, obs, session.token, obs_asset),
               })
    with quiet():
        m.expected_mock = np.asarray(obs_asset.mock)
        m.expected_private = np.asarray(obs_asset.data)
    assert m.expected_private.shape == m.expected_mock.shape
    assert not np.array_equal(m.expected_private, m.expected_mock)

    # Grace's approved and executed request: the other researcher's work
    name = unique("grace")
    submission = submit_plan(grace, count_labels, inputs={"labels": m.grace_asset},
                             constants={}, reason="Grace's own study", name=name)
    m.grace_request_id = _request_uid(grace, submission)
    session.request("POST", f"/pneumosyft/requests/{m.grace_request_id.no_dash}/override",
                    json={"reason": "custom code of the access matrix"})
    with quiet():
        svc(obs, "request.apply", uid=m.grace_request_id)
    m.grace_result = run_approved(grace, submission)
    assert m.grace_result == {"n_samples": len(m.expected_private)}
    with quiet():
        code_id = next(c.id for c in svc(grace, "code.get_all") if c.service_func_name == name)
        outputs = svc(obs, "output.get_by_user_code_id", user_code_id=code_id)
    m.grace_code_id, m.grace_output_id = code_id, outputs[0].output_id_list[0]

    m.users_before, m.datasets_before = set(m.users()), m.dataset_names()
    return m


def _request_uid(client: Any, submission: Submission) -> Any:
    with quiet():
        return next(r.id for r in client.requests.get_all()
                    if str(r.id.no_dash) == submission.request_id)


# -- the actions ------------------------------------------------------------------------------
@dataclass
class Action:
    """attempt(m, actor, state) does it as `actor`; effect(m, actor, value, state) says,
    from the admin's view, whether it happened; prepare and cleanup run as the admin."""

    attempt: Callable[[Matrix, Actor, dict], Any]
    effect: Callable[[Matrix, Actor, Any, dict], bool]
    prepare: Callable[[Matrix, Actor], dict] = lambda m, actor: {}
    cleanup: Callable[[Matrix, Actor, dict], None] = lambda m, actor, state: None


def _upload(m: Matrix, actor: Actor, state: dict) -> Any:
    result = actor.client.upload_dataset(tiny_dataset(state["name"]))
    if type(result).__name__ == "SyftError":
        # syft's client refuses a data scientist before asking: ask the server directly
        return svc(actor.client, "dataset.add", dataset=tiny_dataset(state["name"]))
    return result


def _delete_dataset(m: Matrix, actor: Actor, state: dict) -> None:
    with quiet():
        for dataset in svc(m.obs, "dataset.get_all"):
            if dataset.name == state["name"]:
                svc(m.obs, "dataset.delete", uid=dataset.id)


def _new_user_state(m: Matrix, actor: Actor) -> dict:
    return {"email": f"{unique(actor.role).replace('_', '-')}@matrix-lab.org",
            "password": secrets.token_urlsafe(16)}


def _create_target(m: Matrix, actor: Actor) -> dict:
    from syft.service.user.user_roles import ServiceRole

    state = _new_user_state(m, actor)
    with quiet():
        svc(m.obs, "user.create", name="Role Target", email=state["email"],
            password=state["password"], password_verify=state["password"],
            role=ServiceRole.DATA_SCIENTIST)
    state["uid"] = m.users()[state["email"]].id
    return state


def _delete_user(m: Matrix, actor: Actor, state: dict) -> None:
    user = m.users().get(state["email"])
    if user is not None:
        with quiet():
            svc(m.obs, "user.delete", uid=user.id)


def _create_user(m: Matrix, actor: Actor, state: dict) -> Any:
    from syft.service.user.user_roles import ServiceRole

    return svc(actor.client, "user.create", name="Matrix Probe", email=state["email"],
               password=state["password"], password_verify=state["password"],
               role=ServiceRole.DATA_SCIENTIST)


def _change_role(m: Matrix, actor: Actor, state: dict) -> Any:
    from syft.service.user.user_roles import ServiceRole

    return svc(actor.client, "user.update", uid=state["uid"], role=ServiceRole.DATA_OWNER)


def _role_changed(m: Matrix, actor: Actor, value: Any, state: dict) -> bool:
    return m.users()[state["email"]].role.name == "DATA_OWNER"


def _disable_signup(m: Matrix, actor: Actor, state: dict) -> None:
    if m.signup_enabled():
        with quiet():
            svc(m.obs, "settings.update", signup_enabled=False)


def _own_request(m: Matrix, actor: Actor) -> dict:
    """A pending request of the actor's own (anonymous: of the admin's key it uses)."""
    with quiet():
        return {"request_id": submit(actor.client, actor.asset, unique("own")).id}


def _graces_request(m: Matrix, actor: Actor) -> dict:
    with quiet():
        return {"request_id": submit(m.grace, m.grace_asset, unique("others")).id}


def _submit(m: Matrix, actor: Actor, state: dict) -> Any:
    request = submit(actor.client, actor.asset, state["name"])
    if type(request).__name__ == "Request":
        state["request_id"] = request.id
    return request


def _override_and_apply(m: Matrix, actor: Actor, request_id: Any) -> Any:
    """What an approver of custom code does: register the override (with a reason, which
    needs approve_requests), then approve through syft's request.apply."""
    requests.post(f"{m.url}/pneumosyft/requests/{request_id.no_dash}/override",
                  json={"reason": "access matrix probe"}, timeout=10,
                  headers=auth_headers(actor.token) if actor.token else {})
    return svc(actor.client, "request.apply", uid=request_id)


def _deny_if_pending(m: Matrix, actor: Actor, state: dict) -> None:
    if "request_id" in state and m.request_status(state["request_id"]) == "pending":
        with quiet():
            svc(m.obs, "request.undo", uid=state["request_id"], reason="access matrix cleanup")


def _code_names(m: Matrix) -> set[str]:
    with quiet():
        return {c.service_func_name for c in svc(m.obs, "code.get_all")}


def _token_count(m: Matrix, actor: Actor) -> dict:
    return {"before": len(m.authority.list_tokens())}


def _issue(m: Matrix, actor: Actor, state: dict) -> requests.Response:
    response = requests.post(f"{m.url}/pneumosyft/tokens", headers=actor.headers,
                             json={"email": RESEARCHER, "ttl": "10m"}, timeout=TIMEOUT)
    state["response"] = response
    return response


def _revoke_issued(m: Matrix, actor: Actor, state: dict) -> None:
    response = state.get("response")
    if response is not None and response.status_code == 200:
        m.authority.revoke(response.json()["claims"]["jti"], reason="access matrix cleanup")


def _victim_token(m: Matrix, actor: Actor) -> dict:
    _, claims = m.authority.issue(RESEARCHER, "data_scientist", ttl_seconds=600)
    return {"jti": claims["jti"]}


def _revoked(m: Matrix, actor: Actor, value: Any, state: dict) -> bool:
    return next(t for t in m.authority.list_tokens() if t["jti"] == state["jti"])["revoked"]


ACTIONS: dict[str, Action] = {
    "list_datasets": Action(
        attempt=lambda m, a, s: [d.name for d in svc(a.client, "dataset.get_all")],
        effect=lambda m, a, value, s: value is not None and "xray" in value),
    "read_mock": Action(
        attempt=lambda m, a, s: a.asset.mock,
        effect=lambda m, a, value, s: value is not None
        and np.array_equal(np.asarray(value), m.expected_mock)),
    "read_private": Action(
        attempt=lambda m, a, s: a.asset.data,
        effect=lambda m, a, value, s: value is not None
        and np.array_equal(np.asarray(value), m.expected_private)),
    "upload_dataset": Action(
        prepare=lambda m, a: {"name": unique(a.role)}, attempt=_upload,
        effect=lambda m, a, value, s: s["name"] in m.dataset_names(), cleanup=_delete_dataset),
    "create_user": Action(
        prepare=_new_user_state, attempt=_create_user,
        effect=lambda m, a, value, s: s["email"] in m.users(), cleanup=_delete_user),
    "change_role": Action(
        prepare=_create_target, attempt=_change_role, effect=_role_changed,
        cleanup=_delete_user),
    "enable_signup": Action(
        attempt=lambda m, a, s: svc(a.client, "settings.allow_guest_signup", enable=True),
        effect=lambda m, a, value, s: m.signup_enabled(), cleanup=_disable_signup),
    "enable_signup_by_update": Action(
        attempt=lambda m, a, s: svc(a.client, "settings.update", signup_enabled=True),
        effect=lambda m, a, value, s: m.signup_enabled(), cleanup=_disable_signup),
    "submit_code": Action(
        prepare=lambda m, a: {"name": unique("submit")}, attempt=_submit,
        effect=lambda m, a, value, s: s["name"] in _code_names(m), cleanup=_deny_if_pending),
    "approve_own_request": Action(
        prepare=_own_request,
        attempt=lambda m, a, s: _override_and_apply(m, a, s["request_id"]),
        effect=lambda m, a, value, s: m.request_status(s["request_id"]) == "approved",
        cleanup=_deny_if_pending),
    "approve_others_request": Action(
        prepare=_graces_request,
        attempt=lambda m, a, s: _override_and_apply(m, a, s["request_id"]),
        effect=lambda m, a, value, s: m.request_status(s["request_id"]) == "approved",
        cleanup=_deny_if_pending),
    "read_others_requests": Action(
        attempt=lambda m, a, s: svc(a.client, "request.get_by_uid", uid=m.grace_request_id),
        effect=lambda m, a, value, s: value is not None and value.id == m.grace_request_id
        and value.requesting_user_email == OTHER_RESEARCHER),
    "read_others_results": Action(
        attempt=lambda m, a, s: svc(a.client, "action.get",
                                    uid=m.grace_output_id).syft_action_data,
        effect=lambda m, a, value, s: value == m.grace_result),
    "issue_tokens": Action(
        prepare=_token_count, attempt=_issue,
        effect=lambda m, a, value, s: len(m.authority.list_tokens()) > s["before"],
        cleanup=_revoke_issued),
    "revoke_tokens": Action(
        prepare=_victim_token,
        attempt=lambda m, a, s: requests.post(f"{m.url}/pneumosyft/tokens/{s['jti']}/revoke",
                                              headers=a.headers, json={"reason": "matrix"},
                                              timeout=TIMEOUT),
        effect=_revoked),
    "read_audit": Action(
        attempt=lambda m, a, s: requests.get(f"{m.url}/pneumosyft/audit", headers=a.headers,
                                             params={"limit": 1}, timeout=TIMEOUT),
        effect=lambda m, a, value, s: value is not None and "entries" in value.json()),
}

assert {action for _, action in EXPECTED} == set(ACTIONS)
assert set(EXPECTED) == {(role, action) for role in ROLES for action in ACTIONS}


def _cell(role: str, action: str) -> Any:
    bug = KNOWN_PRODUCT_BUGS.get((role, action))
    marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    return pytest.param(role, action, id=f"{role}-{action}", marks=marks)


CELLS = [_cell(role, action) for action in ACTIONS for role in ROLES]


@pytest.mark.parametrize(("role", "action"), CELLS)
def test_cell(matrix: Matrix, role: str, action: str) -> None:
    expected = EXPECTED[(role, action)]
    actor, spec = matrix.actors[role], ACTIONS[action]
    state = spec.prepare(matrix, actor)
    started = datetime.now(timezone.utc)
    try:
        with acting(actor):
            outcome = classify(lambda: spec.attempt(matrix, actor, state))
        took_effect = bool(spec.effect(matrix, actor, outcome.value, state))
    finally:
        spec.cleanup(matrix, actor, state)
    verdict = "allowed" if outcome.allowed else f"refused ({outcome.how})"
    print(f"CELL {role:15} {action:24} {verdict} effect={took_effect}")
    assert outcome.allowed is expected, f"{role} may{'' if expected else ' not'} {action}; " \
                                        f"it was {verdict}"
    assert took_effect is expected, f"{role} {action}: {verdict}, but effect={took_effect}"
    if role == ANON:
        assert outcome.how == "HTTP 401", "without a token the gate must refuse, not syft"
    if outcome.how.startswith("HTTP"):  # the gate's and our routes' refusals are audited
        refusals = [e for e in matrix.audit.read(since=started) if e["outcome"] == "refused"]
        assert any(e["actor"] == (actor.email if actor.token else "anonymous")
                   for e in refusals), refusals


# -- beyond the matrix --------------------------------------------------------------------------
def test_a_researcher_finds_nothing_of_another_researchers_work(matrix: Matrix, ada) -> None:
    """Ada's listings hold none of Grace's requests, code, outputs or jobs."""
    with quiet():
        request_ids = {r.id for r in svc(ada, "request.get_all")}
        code_names = {c.service_func_name for c in svc(ada, "code.get_all")}
        outputs = svc(ada, "output.get_all")
        jobs = svc(ada, "job.get_all")
    assert matrix.grace_request_id not in request_ids
    assert not any(name.startswith("matrix_grace_") for name in code_names)
    assert all(matrix.grace_output_id not in o.output_id_list for o in outputs)
    assert all(j.user_code_id != matrix.grace_code_id for j in jobs)


def test_the_matrix_left_no_trace(matrix: Matrix) -> None:
    """Sign-up is still off, and no user or dataset was left behind."""
    assert matrix.signup_enabled() is False
    response = requests.post(f"{matrix.url}/api/v2/register",
                             headers=auth_headers(matrix.admin_token), timeout=TIMEOUT)
    assert (response.status_code, response.json()) == (
        403, {"error": "self sign-up is disabled; the hospital admin creates accounts"})
    assert set(matrix.users()) == matrix.users_before
    assert not [email for email in matrix.users() if "matrix" in email]
    assert matrix.dataset_names() == matrix.datasets_before
