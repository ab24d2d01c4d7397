"""The JWT gate: an ASGI layer in front of every HTTP route of the domain.

Every request must carry ``Authorization: Bearer <JWT>`` issued by this domain.
A refused request gets 401 (bad or missing token) or 403 (valid token, not
allowed) with a one-line JSON reason, and no syft code runs. Only ``/health`` is
open, and the web console under ``/admin/``, which logs its users in itself (a session
cookie, never a bearer token: `server/console/`), and the exchange route of private
inference, which only the other computing hospital of a query can use (a MAC from their
aggregation keys: `server/inference_link.py`). Beyond the token itself the gate checks that

* a login's email is the token's subject and the account's role is not above
  the token's role (a data scientist's token cannot open an admin session);
* every syft API call is signed by the account the token names, and the syft
  path is allowed for that account's role by ``policies/permissions.yaml``;
* code submitted for execution only uses datasets the researcher may use.

Every decision about an account is appended to the audit log; refusals of requests
without a valid token are sampled and counted (`server/audit.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import anyio

from common.errors import PneumoSyftError, TokenError
from common import syft_compat
from domain_setup.policy.snapshot import LivePolicies
from domain_setup.vetting.verdicts import asset_names_of
from domain_setup.policy.roles import role_at_least
from domain_setup.server.audit import AuditLog
from domain_setup.policy.permissions import ENABLE_SIGNUP, Permissions, action_for_path
from domain_setup.server.console.security import is_console_path
from domain_setup.server.inference_link import is_exchange_path
from domain_setup.server.tokens import TokenAuthority, bearer_token

OPEN_PATHS = frozenset({"/health"})
# syft's HTTP routes a valid token may reach besides login, api and api_call; the
# password-reset, sign-up and peer stream routes are refused (default deny)
OPEN_SYFT_ROUTES = frozenset({"/api/v2/", "/api/v2/metadata", "/api/v2/metadata_capnp"})
MAX_BODY_BYTES = 1 << 30
SUBMIT_PATHS = frozenset({"code.request_code_execution", "code.submit", "request.submit",
                          "project.create_project", "project.add_event",
                          "project.broadcast_event"})
# Syft calls issued many times per session that change nothing; audited once per
# session would be noise, so only refusals of these are recorded.
QUIET_PATHS = frozenset({"api.get", "metadata", "settings.get", "notifications.get_all_unread",
                         # a researcher's one-second poll of her own request's status
                         "request.get_by_uid"})

class Refusal(Exception):
    """A request the gate refuses: HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Account:
    """What the gate needs to know of a syft user."""

    email: str
    role: str
    groups: tuple[str, ...] = ()


class AccountDirectory:
    """Looks up syft users by email or verify key with the server's own credentials."""

    def __init__(self, worker: Any, groups_of: Callable[[str], tuple[str, ...]]):
        self._worker = worker
        self._groups_of = groups_of

    def _account(self, user: Any) -> Account:
        return Account(email=user.email, role=syft_compat.role_of(user),
                       groups=self._groups_of(user.email))

    def by_email(self, email: str) -> Account | None:
        user = syft_compat.user_by_email(self._worker, email)
        return None if user is None else self._account(user)

    def by_verify_key(self, verify_key: Any) -> Account | None:
        user = syft_compat.user_by_verify_key(self._worker, verify_key)
        return None if user is None else self._account(user)

    def dataset_names_for_assets(self, action_ids: set[str]) -> set[str]:
        """Names of the datasets holding any of the given asset action ids."""
        names = asset_names_of(syft_compat.all_datasets(self._worker))
        return {name.split("/")[0] for action_id, name in names.items() if action_id in action_ids}


class GateMiddleware:
    """Starlette middleware that puts a `TokenGate` in front of an app:
    ``app.add_middleware(GateMiddleware, gate=gate)``."""

    def __init__(self, app: Any, gate: "TokenGate"):
        self.gate = gate.wrap(app)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        await self.gate(scope, receive, send)


class TokenGate:
    """ASGI middleware; build it with `for_domain`, then `wrap(app)`."""

    def __init__(self, authority: TokenAuthority, audit: AuditLog, policies: LivePolicies,
                 accounts: AccountDirectory):
        self.authority = authority
        self.audit = audit
        self.policies = policies
        self.accounts = accounts
        self._app: Any = None

    @property
    def permissions(self) -> Permissions:
        """The permission rules of the policy snapshot in force (see `policies reload`)."""
        return self.policies.current.permissions

    @classmethod
    def for_domain(cls, state: Any, config: Any, worker: Any, *, policies: LivePolicies,
                   audit: AuditLog) -> "TokenGate":
        authority = TokenAuthority.load_or_create(
            state.root, issuer=config.name, audience=str(worker.id), algorithm=config.jwt_algorithm
        )
        accounts = AccountDirectory(worker, policies.groups_of)
        return cls(authority, audit, policies, accounts)

    def wrap(self, app: Any) -> "TokenGate":
        self._app = app
        return self

    # -- ASGI ------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            return await self._app(scope, receive, send)
        if scope["type"] != "http":  # no websockets on this domain
            await send({"type": "websocket.close", "code": 1008})
            return
        path = scope.get("path", "")
        # the console checks its own sessions; an inference exchange, the peer's MAC
        if path in OPEN_PATHS or is_console_path(path) or is_exchange_path(path):
            return await self._app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        claims: dict | None = None
        try:
            claims = self._verify(headers.get("authorization"))
            body = None
            if path in ("/api/v2/login", "/api/v2/api_call", "/api/v2/register"):
                body = await _read_body(receive)
            detail = await anyio.to_thread.run_sync(self._authorize, scope, claims, body)
        except Refusal as refusal:
            if claims:  # an account's refusal is written in full, every time
                self.audit.record(claims["sub"], "auth", target=path, outcome="refused",
                                  status=refusal.status, reason=refusal.reason)
            else:  # no valid token: sampled, so that a flood cannot fill the disk
                self.audit.refused_anonymous(path, status=refusal.status, reason=refusal.reason)
            return await _send_json(send, refusal.status, {"error": refusal.reason})
        if detail is not None:
            self.audit.record(claims["sub"], detail.pop("action"), outcome="accepted", **detail)
        scope.setdefault("state", {})["claims"] = claims
        if body is not None:
            receive = _replay(body, receive)
        return await self._app(scope, receive, send)

    # -- decisions ---------------------------------------------------------------
    def _verify(self, authorization: str | None) -> dict:
        try:
            return self.authority.verify(bearer_token(authorization))
        except TokenError as exc:
            raise Refusal(401, str(exc)) from None

    def _authorize(self, scope: dict, claims: dict, body: bytes | None) -> dict | None:
        """Decide on a request with a valid token; returns audit details or None."""
        path = scope["path"]
        if path == "/api/v2/login":
            return self._authorize_login(claims, body or b"")
        if path == "/api/v2/register":
            raise Refusal(403, "self sign-up is disabled; the hospital admin creates accounts")
        if path == "/api/v2/api_call":
            return self._authorize_api_call(claims, body or b"")
        if path == "/api/v2/api":
            self._check_api_schema_request(claims, scope.get("query_string", b""))
            return None
        if path in OPEN_SYFT_ROUTES or path.startswith("/pneumosyft/"):
            return None  # the /pneumosyft routes check the caller's permission themselves
        raise Refusal(403, f"{path} is not served by this domain")

    def _account_for_token(self, claims: dict) -> Account:
        account = self.accounts.by_email(claims["sub"])
        if account is None:
            raise Refusal(403, f"no account for the token's subject {claims['sub']}")
        if not role_at_least(claims["role"], account.role):
            raise Refusal(
                403, f"token role {claims['role']} is below the account's role {account.role}"
            )
        return account

    def _authorize_login(self, claims: dict, body: bytes) -> dict:
        try:
            email = str(json.loads(body or b"{}").get("email", ""))
        except (ValueError, AttributeError):
            raise Refusal(400, "login body is not JSON with an email") from None
        if email.strip().lower() != claims["sub"].lower():
            raise Refusal(403, "login email differs from the token's subject")
        self._account_for_token(claims)
        return {"action": "login", "target": email}

    def _authorize_api_call(self, claims: dict, body: bytes) -> dict | None:
        call = syft_compat.signed_api_call(body)
        if call is None:
            raise Refusal(400, "API call body is not a signed syft API call")
        signer = self.accounts.by_verify_key(call.credentials)
        token_account = self._account_for_token(claims)
        message = call.message
        syft_path = str(message.path)
        if signer is None or signer.email.lower() != token_account.email.lower():
            raise Refusal(403, "API call is signed by another account than the token's subject")
        if not self.permissions.role_may_call(signer.role, syft_path):
            raise Refusal(403, f"role {signer.role} may not call {syft_path} "
                               "(not in its syft_paths in permissions.yaml)")
        action = ENABLE_SIGNUP if _enables_signup(syft_path, message) else action_for_path(syft_path)
        if action is not None and not self.permissions.role_may(signer.role, action):
            raise Refusal(403, f"role {signer.role} may not {action} ({syft_path})")
        if syft_path in SUBMIT_PATHS:
            self._check_dataset_access(signer, message)
        if syft_path in QUIET_PATHS:
            return None
        return {"action": f"syft:{syft_path}", "target": _call_target(message)}

    def _check_dataset_access(self, account: Account, message: Any) -> None:
        asset_ids = syft_compat.asset_ids_in_call(message)
        for name in sorted(self.accounts.dataset_names_for_assets(asset_ids)):
            if not self.permissions.may_use_dataset(account.email, account.groups,
                                                    account.role, name):
                raise Refusal(403, f"{account.email} may not use dataset {name!r}")

    def _check_api_schema_request(self, claims: dict, query: bytes) -> None:
        from urllib.parse import parse_qs

        values = parse_qs(query.decode("latin-1")).get("verify_key", [])
        if not values:
            return
        try:
            verify_key = syft_compat.verify_key_from_string(values[0])
        except Exception:
            raise Refusal(400, "verify_key is not a syft verify key") from None
        owner = self.accounts.by_verify_key(verify_key)
        if owner is not None and owner.email.lower() != claims["sub"].lower():
            raise Refusal(403, "API schema requested for another account than the token's subject")


def _enables_signup(syft_path: str, message: Any) -> bool:
    """Does a settings call switch open sign-up on (settings.update/set with signup_enabled)?"""
    if syft_path not in ("settings.update", "settings.set"):
        return False
    values = list(message.args) + list(message.kwargs.values())
    if message.kwargs.get("signup_enabled") is True:
        return True
    return any(getattr(value, "signup_enabled", None) is True for value in values)


def _call_target(message: Any) -> str:
    """A short, secret-free description of what an API call acts on (ids only)."""
    ids = syft_compat.uids_in(list(message.args) + list(message.kwargs.values()))
    return ",".join(ids)[:200]


async def _read_body(receive: Callable) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refusal(400, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refusal(413, "request body too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Callable) -> Callable:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send: Callable, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


__all__ = ["TokenGate", "Refusal", "AccountDirectory", "PneumoSyftError"]
