"""Attacks on the JWT gate of a live domain, over HTTP, with real JWTs and real syft calls.

Every forged, stale, foreign or misused token is refused with 401 (or 403 for a valid
token used beyond its account) and the exact one-line JSON reason, before any syft code
runs: the refused request is a genuine root-admin-signed `user.create` call, and the user
it would create must not exist afterwards. Every refusal is in the audit log.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import json
import re
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

import jwt
import pytest
import requests

from common.secure_files import read_json
from conftest import ADMIN, OTHER_RESEARCHER, RESEARCHER
from domain_setup.admin.session import AdminSession
from demos.local_domain import LocalDomain
from domain_setup.server.tokens import TokenAuthority

pytestmark = pytest.mark.domain

TIMEOUT = 10


# -- helpers ---------------------------------------------------------------------------
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: dict) -> str:
    return b64url(json.dumps(obj).encode())


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def utc_now_text() -> str:
    """Now, to the millisecond, as `audit --since` takes it (the log's clock is UTC)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def issue_cli(domain: LocalDomain, email: str, role: str | None = None) -> tuple[str, str]:
    """`token issue` through the admin CLI: (token, jti)."""
    args = ["token", "issue", "--email", email, "--ttl", "1h"]
    if role:
        args += ["--role", role]
    done = domain.run(*args)
    jti = re.search(r"jti ([0-9a-f]{32})", done.stderr).group(1)
    return done.stdout.strip(), jti


def assert_refused(response: requests.Response, status: int, reason: str) -> None:
    """The gate's answer: `status` and exactly one line of JSON, `{"error": reason}`."""
    assert (response.status_code, response.text) == (status, json.dumps({"error": reason}))
    assert response.headers["content-type"] == "application/json"
    assert len(response.text.splitlines()) == 1


def assert_audited(domain: LocalDomain, since: str, *, actor: str, target: str, status: int,
                   reason: str) -> None:
    """The refusal is in the audit log, read with the admin CLI."""
    out = domain.cli("audit", "--json", "--since", since, "--action", "auth")
    refusals = [json.loads(line) for line in out.splitlines() if line.strip()]
    wanted = {"actor": actor, "action": "auth", "target": target, "outcome": "refused",
              "status": status, "reason": reason}
    assert any(all(e.get(k) == v for k, v in wanted.items()) for e in refusals), \
        (wanted, refusals[-5:])


def quiet():
    return contextlib.redirect_stdout(io.StringIO())


def signed_call_body(client, path: str, **kwargs) -> bytes:
    """A genuine signed syft API call of `client`'s account, serialized as syft sends it."""
    from syft.client.api import SyftAPICall
    from syft.serde.serialize import _serialize

    call = SyftAPICall(server_uid=client.api.server_uid, path=path, args=[], kwargs=kwargs,
                       blocking=True)
    return _serialize(call.sign(client.api.signing_key), to_bytes=True)


def post_call(url: str, body: bytes, headers: dict) -> requests.Response:
    return requests.post(f"{url}/api/v2/api_call", data=body, headers=headers, timeout=TIMEOUT)


def user_emails(admin_client) -> set[str]:
    with quiet():
        return {u.email for u in admin_client.api.services.user.get_all()}


# -- fixtures --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def admin_details(hospital) -> dict:
    """url, email and session token of the admin CLI, and the admin's password."""
    session = AdminSession(hospital.state)
    return {"url": session.url, "email": session.email, "token": session.token,
            "password": hospital.state.admin_password(), "session": session}


@pytest.fixture(scope="module")
def admin_client(hospital):
    """The root admin's syft client, through the gate (as the admin CLI makes it)."""
    with quiet():
        return AdminSession(hospital.state).client()


@pytest.fixture(scope="module")
def authority(hospital) -> TokenAuthority:
    """The domain's token authority, loaded here: it shares tokens.json with the server."""
    return TokenAuthority.load(hospital.state.root)


@pytest.fixture(scope="module")
def ada_token(ada_connection) -> str:
    return read_json(ada_connection)["token"]


@pytest.fixture(scope="module")
def grace(hospital) -> dict:
    """Grace's token and password (issued through the admin CLI)."""
    token, _ = issue_cli(hospital, OTHER_RESEARCHER)
    password = read_json(hospital.state.account_passwords_path)[OTHER_RESEARCHER]
    return {"email": OTHER_RESEARCHER, "token": token, "password": password}


@pytest.fixture(scope="module")
def create_user_call(admin_client):
    """Makes (email, body): a root-admin-signed call creating an admin account `email`."""
    from syft.service.user.user_roles import ServiceRole

    def make(label: str) -> tuple[str, bytes]:
        email = f"mallory-{label}-{secrets.token_hex(3)}@intruder-lab.org"
        password = secrets.token_urlsafe(16)
        return email, signed_call_body(admin_client, "user.create", name="Mallory", email=email,
                                       password=password, password_verify=password,
                                       role=ServiceRole.ADMIN)
    return make


@pytest.fixture(scope="module")
def other_domain(tmp_path_factory):
    """A second live domain with its own keys (no data, no accounts but its root admin)."""
    domain = LocalDomain.start_new("Other Clinic", tmp_path_factory.mktemp("other-domain"))
    try:
        yield domain
    finally:
        domain.stop()


# -- 401: bad tokens -------------------------------------------------------------------
def _genuine_escalated(ada_token: str) -> dict:
    """The claims of Ada's genuine, registered token, raised to admin."""
    return dict(claims_of(ada_token), role="admin", sub=ADMIN)


def _forge(case: str, hospital, authority: TokenAuthority, admin_details: dict, ada_token: str,
           tmp_path: Path) -> dict[str, str]:
    """The Authorization header (or none) of one attack."""
    now = int(time.time())
    keys = hospital.state.keys_dir
    if case == "no-header":
        return {}
    if case == "empty-bearer":
        return {"Authorization": "Bearer "}
    if case == "basic-scheme":
        basic = base64.b64encode(f"{ADMIN}:{admin_details['password']}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}
    if case == "token-without-scheme":
        return {"Authorization": admin_details["token"]}
    if case == "malformed":
        return bearer("this-is-not-a-jwt")
    if case == "alg-none":
        return bearer(f"{b64json({'alg': 'none', 'typ': 'JWT'})}."
                      f"{b64json(_genuine_escalated(ada_token))}.")
    if case == "hs256-signed-with-public-key":
        signing_input = (f"{b64json({'alg': 'HS256', 'typ': 'JWT'})}."
                         f"{b64json(_genuine_escalated(ada_token))}")
        public_pem = (keys / "jwt_public.pem").read_bytes()
        mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        return bearer(f"{signing_input}.{b64url(mac)}")
    if case == "another-key-same-issuer-and-audience":
        intruder = TokenAuthority.create(tmp_path / "intruder", authority.issuer,
                                         authority.audience)
        return bearer(intruder.issue(ADMIN, "admin")[0])
    if case == "tampered-payload-role-admin":
        header, _, signature = ada_token.split(".")
        return bearer(f"{header}.{b64json(dict(claims_of(ada_token), role='admin'))}.{signature}")
    if case == "expired":
        return bearer(authority.issue(ADMIN, "admin", ttl_seconds=600, now=now - 3600)[0])
    if case == "not-yet-valid":
        return bearer(authority.issue(ADMIN, "admin", ttl_seconds=600, now=now + 3600)[0])
    if case in ("wrong-issuer", "wrong-audience"):
        # the domain's own key and registry, but made out for another domain
        key = authority._keys
        issuer = "Evil Clinic" if case == "wrong-issuer" else authority.issuer
        audience = "0" * 32 if case == "wrong-audience" else authority.audience
        rogue = TokenAuthority(hospital.state.root, authority.algorithm, issuer, audience, key)
        return bearer(rogue.issue(ADMIN, "admin")[0])
    if case == "unregistered-but-signed-with-the-domain-key":  # a stolen signing key
        claims = {"iss": authority.issuer, "aud": authority.audience, "sub": ADMIN,
                  "role": "admin", "iat": now, "nbf": now, "exp": now + 600,
                  "jti": secrets.token_hex(16)}
        return bearer(jwt.encode(claims, (keys / "jwt_private.pem").read_bytes(),
                                 algorithm=authority.algorithm))
    if case == "revoked-by-cli":
        token, jti = issue_cli(hospital, ADMIN)
        ok = requests.get(f"{hospital.url}/api/v2/metadata", headers=bearer(token),
                          timeout=TIMEOUT)
        assert ok.status_code == 200  # it worked before the revocation
        hospital.cli("token", "revoke", jti, "--reason", "laptop lost")
        return bearer(token)
    raise AssertionError(case)


BAD_TOKENS = {
    "no-header": "missing token",
    "empty-bearer": "missing token",
    "basic-scheme": "authorization scheme must be Bearer",
    "token-without-scheme": "authorization scheme must be Bearer",
    "malformed": "malformed token",
    "alg-none": "algorithm not allowed",
    "hs256-signed-with-public-key": "algorithm not allowed",
    "another-key-same-issuer-and-audience": "bad signature",
    "tampered-payload-role-admin": "bad signature",
    "expired": "token expired",
    "not-yet-valid": "token not yet valid",
    "wrong-issuer": "wrong issuer",
    "wrong-audience": "wrong audience",
    "unregistered-but-signed-with-the-domain-key": "unknown token",
    "revoked-by-cli": "token revoked",
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_bad_token_is_refused_before_syft_runs(case, hospital, authority, admin_details,
                                               ada_token, admin_client, create_user_call,
                                               tmp_path):
    since = utc_now_text()
    headers = _forge(case, hospital, authority, admin_details, ada_token, tmp_path)
    email, body = create_user_call(case)
    assert_refused(post_call(hospital.url, body, headers), 401, BAD_TOKENS[case])
    assert email not in user_emails(admin_client)  # the signed call never reached syft
    assert_audited(hospital, since, actor="anonymous", target="/api/v2/api_call", status=401,
                   reason=BAD_TOKENS[case])


def test_the_same_signed_call_with_a_valid_token_does_create_the_user(hospital, admin_details,
                                                                      admin_client,
                                                                      create_user_call):
    """Control: the call the attacks carry is real; only the token stopped it."""
    email, body = create_user_call("control")
    response = post_call(hospital.url, body, bearer(admin_details["token"]))
    try:
        assert response.status_code == 200
        assert email in user_emails(admin_client)
    finally:
        with quiet():
            for user in admin_client.api.services.user.get_all():
                if user.email == email:
                    admin_client.api.services.user.delete(uid=user.id)
    assert email not in user_emails(admin_client)


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/v2/metadata"), ("GET", "/api/v2/api"), ("POST", "/api/v2/login"),
    ("POST", "/api/v2/register"), ("GET", "/pneumosyft/info"), ("GET", "/pneumosyft/tokens"),
    ("POST", "/pneumosyft/tokens"), ("GET", "/pneumosyft/audit"), ("GET", "/health/"),
    ("GET", "/docs"), ("GET", "/no-such-route"),
])
def test_every_route_but_health_needs_a_token(hospital, method, path):
    since = utc_now_text()
    response = requests.request(method, f"{hospital.url}{path}", timeout=TIMEOUT,
                                json={"email": ADMIN, "password": "changethis"})
    assert_refused(response, 401, "missing token")
    assert_audited(hospital, since, actor="anonymous", target=path, status=401,
                   reason="missing token")


@pytest.mark.parametrize("method,path", [
    ("POST", "/api/v2/reset_password"), ("POST", "/api/v2/forgot_password"),
    ("GET", "/api/v2/stream/abc/def/"), ("PUT", "/api/v2/stream/abc/def/"),
    ("GET", "/docs"), ("GET", "/no-such-route"),
])
def test_routes_outside_the_allowlist_are_refused_even_with_a_valid_token(hospital, method, path):
    token, _ = hospital.admin.issue_token(ADMIN, ttl="10m")
    since = utc_now_text()
    response = requests.request(method, f"{hospital.url}{path}", timeout=TIMEOUT,
                                headers=bearer(token), json={"email": ADMIN})
    assert_refused(response, 403, f"{path} is not served by this domain")
    assert_audited(hospital, since, actor=ADMIN, target=path, status=403,
                   reason=f"{path} is not served by this domain")


def test_health_is_open_without_a_token(hospital):
    response = requests.get(f"{hospital.url}/health", timeout=TIMEOUT)
    assert (response.status_code, response.json()) == (200, {"status": "ok", "problems": []})


# -- 401: tokens of another live domain, revocation across a restart -----------------------
def test_a_token_of_another_domain_is_refused(hospital, other_domain, admin_details):
    other_session = AdminSession(other_domain.state)  # its token lives as long as it does
    other_token = other_session.token
    assert requests.get(f"{other_domain.url}/api/v2/metadata", headers=bearer(other_token),
                        timeout=TIMEOUT).status_code == 200  # valid where it was issued
    since = utc_now_text()
    response = requests.get(f"{hospital.url}/api/v2/metadata", headers=bearer(other_token),
                            timeout=TIMEOUT)
    assert_refused(response, 401, "bad signature")
    assert_audited(hospital, since, actor="anonymous", target="/api/v2/metadata", status=401,
                   reason="bad signature")
    # and the other way round
    response = requests.get(f"{other_domain.url}/pneumosyft/tokens",
                            headers=bearer(admin_details["token"]), timeout=TIMEOUT)
    assert_refused(response, 401, "bad signature")


def test_a_revoked_token_stays_revoked_after_a_restart(other_domain):
    token, jti = issue_cli(other_domain, ADMIN)
    url = other_domain.url
    assert requests.get(f"{url}/api/v2/metadata", headers=bearer(token),
                        timeout=TIMEOUT).status_code == 200
    other_domain.cli("token", "revoke", jti, "--reason", "leaked in a notebook")
    assert_refused(requests.get(f"{url}/api/v2/metadata", headers=bearer(token),
                                timeout=TIMEOUT), 401, "token revoked")
    other_domain.stop()
    other_domain.start()

    since = utc_now_text()
    assert_refused(requests.get(f"{url}/api/v2/metadata", headers=bearer(token),
                                timeout=TIMEOUT), 401, "token revoked")
    assert_audited(other_domain, since, actor="anonymous", target="/api/v2/metadata",
                   status=401, reason="token revoked")


# -- no long-lived admin credential on disk --------------------------------------------------
def test_connection_json_holds_no_token_and_a_cli_session_token_dies_with_it(hospital):
    on_disk = read_json(hospital.state.connection_path)
    assert set(on_disk) == {"url", "email"}, on_disk
    session = AdminSession(hospital.state)
    token = session.token
    claims = TokenAuthority.load(hospital.state.root).verify(token)
    assert claims["role"] == "admin" and claims["exp"] - claims["iat"] <= 3600
    assert requests.get(f"{hospital.url}/pneumosyft/tokens", headers=bearer(token),
                        timeout=TIMEOUT).status_code == 200
    session.close()
    assert_refused(requests.get(f"{hospital.url}/pneumosyft/tokens", headers=bearer(token),
                                timeout=TIMEOUT), 401, "token revoked")
    assert session.token != token  # a session used again issues itself a new one


# -- 403: valid tokens used beyond their account --------------------------------------------
def _login(url: str, token: str, email: str, password: str) -> requests.Response:
    return requests.post(f"{url}/api/v2/login", json={"email": email, "password": password},
                         headers=bearer(token), timeout=TIMEOUT)


def test_login_with_another_researchers_email_is_refused(hospital, ada_token, grace):
    since = utc_now_text()
    response = _login(hospital.url, ada_token, grace["email"], grace["password"])
    assert_refused(response, 403, "login email differs from the token's subject")
    assert_audited(hospital, since, actor=RESEARCHER, target="/api/v2/login", status=403,
                   reason="login email differs from the token's subject")


def test_a_researchers_token_cannot_open_an_admin_session(hospital, ada_token, admin_details):
    since = utc_now_text()
    response = _login(hospital.url, ada_token, ADMIN, admin_details["password"])
    assert_refused(response, 403, "login email differs from the token's subject")
    assert_audited(hospital, since, actor=RESEARCHER, target="/api/v2/login", status=403,
                   reason="login email differs from the token's subject")


def test_an_admin_cannot_log_in_with_a_data_scientist_token(hospital, admin_details):
    token, _ = issue_cli(hospital, ADMIN, role="data_scientist")
    since = utc_now_text()
    response = _login(hospital.url, token, ADMIN, admin_details["password"])
    reason = "token role data_scientist is below the account's role admin"
    assert_refused(response, 403, reason)
    assert_audited(hospital, since, actor=ADMIN, target="/api/v2/login", status=403,
                   reason=reason)


def test_a_call_signed_by_another_account_than_the_tokens_is_refused(hospital, ada, grace):
    """Log in as Ada with Ada's token; send one of Ada's signed calls with Grace's token."""
    body = signed_call_body(ada, "dataset.get_all")
    reason = "API call is signed by another account than the token's subject"
    since = utc_now_text()
    assert_refused(post_call(hospital.url, body, bearer(grace["token"])), 403, reason)
    assert_audited(hospital, since, actor=OTHER_RESEARCHER, target="/api/v2/api_call",
                   status=403, reason=reason)
    with quiet():  # Ada's own token still carries it
        assert [d.name for d in ada.datasets.get_all()]


def test_the_api_schema_of_another_account_is_refused(hospital, ada_token, admin_client):
    reason = "API schema requested for another account than the token's subject"
    since = utc_now_text()
    response = requests.get(f"{hospital.url}/api/v2/api", headers=bearer(ada_token),
                            params={"verify_key": str(admin_client.api.signing_key.verify_key),
                                    "communication_protocol": "dev"}, timeout=TIMEOUT)
    assert_refused(response, 403, reason)
    assert_audited(hospital, since, actor=RESEARCHER, target="/api/v2/api", status=403,
                   reason=reason)


def test_a_stolen_admin_signature_is_useless_with_a_researchers_token(hospital, ada_token,
                                                                      admin_client,
                                                                      create_user_call):
    email, body = create_user_call("stolen-key")
    reason = "API call is signed by another account than the token's subject"
    since = utc_now_text()
    assert_refused(post_call(hospital.url, body, bearer(ada_token)), 403, reason)
    assert email not in user_emails(admin_client)
    assert_audited(hospital, since, actor=RESEARCHER, target="/api/v2/api_call", status=403,
                   reason=reason)


# -- a stock syft 0.9.5 client ---------------------------------------------------------------
def test_a_stock_syft_client_works_with_the_header_and_not_without(hospital, grace):
    import syft as sy
    from syft.client.client import HTTPConnection

    connection = HTTPConnection(url=hospital.url, headers=bearer(grace["token"]))
    with quiet():
        guest = connection.get_client_type().unwrap()(connection=connection)
        client = guest.login(email=grace["email"], password=grace["password"], cache=False)
        assert "xray" in [d.name for d in client.datasets.get_all()]

    since = utc_now_text()
    with quiet(), pytest.raises(Exception, match="401"):
        sy.login(url=hospital.url, email=grace["email"], password=grace["password"],
                 cache=False)
    bare = HTTPConnection(url=hospital.url)
    with pytest.raises(requests.ConnectionError, match="401"):
        bare._make_post(bare.routes.ROUTE_LOGIN.value,
                        {"email": grace["email"], "password": grace["password"]})
    assert_audited(hospital, since, actor="anonymous", target="/api/v2/login", status=401,
                   reason="missing token")
