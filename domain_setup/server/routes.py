"""PneumoSyft's own HTTP routes on the domain (under /pneumosyft, behind the gate).

    GET  /pneumosyft/info                 domain name, id, aggregation public key (or null)
    GET  /pneumosyft/policies             the policy snapshot in force (read_audit)
    POST /pneumosyft/policies/reload      validate the policy files, put them in force
                                          (change_settings)
    GET  /pneumosyft/requests/{id}/quote  the domain's quote: privacy cost, the round's
                                          parties, every problem, and the requester's
                                          reason (approve_requests)
    POST /pneumosyft/requests/{id}/override  allow the next approval of custom or violating
                                          code, with a reason (approve_requests)
    GET  /pneumosyft/tokens               list issued tokens        (issue_tokens)
    POST /pneumosyft/tokens               issue a token             (issue_tokens)
    POST /pneumosyft/tokens/{jti}/revoke  revoke a token            (revoke_tokens)
    GET  /pneumosyft/audit                read the audit log        (read_audit)
    POST /pneumosyft/audit                record an admin action    (read_audit; a request.*
                                          or account.* action: who may take it)

The admin CLI talks to these, as a remote admin would.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from common.errors import PneumoSyftError
from common import syft_compat
from domain_setup.policy.roles import ROLES, role_below
from domain_setup.server.approval_guard import OVERRIDE_TTL_SECONDS
from domain_setup.server.audit import parse_since
from domain_setup.server.tokens import parse_ttl


_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


class RouteRefusal(Exception):
    """A /pneumosyft request the caller's role may not make: status and one-line reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def install_refusal_handler(app: Any) -> None:
    """Answer a RouteRefusal with the gate's JSON shape: ``{"error": reason}``."""
    async def refused(_request: Request, exc: RouteRefusal) -> JSONResponse:
        return _error(exc.status, exc.reason)
    app.add_exception_handler(RouteRefusal, refused)


async def _json_object(request: Request) -> dict:
    """The request's JSON body, which must be an object (TypeError otherwise)."""
    body = await request.json()
    if not isinstance(body, dict):
        raise TypeError("body is not a JSON object")
    return body


def _token_request(body: dict) -> tuple[str, int, str]:
    """Email, lifetime (seconds) and asked role ('' for the account's) of a token request."""
    return str(body["email"]), parse_ttl(str(body.get("ttl", "8h"))), str(body.get("role") or "")


def _audit_entry(body: dict) -> dict:
    """An admin action to record, every field cut to a bounded length."""
    details = {str(k)[:50]: str(v)[:500] for k, v in dict(body.get("details", {})).items()}
    return {**details, "action": str(body["action"])[:100],
            "target": str(body.get("target", ""))[:200],
            "outcome": str(body.get("outcome", "ok"))[:50]}


# who may record an action taken outside the domain's routes (a denial is a syft call,
# an account change a few): whoever may take it; anything else, whoever may read the log
RECORD_PERMISSIONS = {"request": "approve_requests", "account": "manage_accounts"}


def permission_to_record(action: str) -> str:
    """The action of permissions.yaml a caller needs to record `action` in the audit log."""
    return RECORD_PERMISSIONS.get(action.split(".", 1)[0], "read_audit")


def checked_request_id(text: str) -> str:
    """A request id from a path: 32 hex digits (dashes and case forgiven), else 404."""
    wanted = text.strip().lower().replace("-", "")
    if not _REQUEST_ID.fullmatch(wanted):
        raise RouteRefusal(404, f"no request with id {text[:64]!r}")
    return wanted


def route_caller(gate: Any, request: Request, action: str | None, what: str) -> Any:
    """The caller's account if its role may `action` (None: any account); else
    RouteRefusal 403 (audited)."""
    claims = request.state.claims
    account = gate.accounts.by_email(claims["sub"])
    role = account.role if account else "unknown"
    if account is not None and role_below(claims["role"], account.role):
        role = claims["role"]  # a down-scoped token acts with its own, lower role
    if account is None or (action is not None and not gate.permissions.role_may(role, action)):
        gate.audit.record(claims["sub"], action or "route", outcome="refused",
                          reason=f"role {role}")
        raise RouteRefusal(403, f"your role may not {what}")
    return account


def make_domain_router(state: Any, config: Any, worker: Any, gate: Any,
                       overrides: Any, ledger: Any, pending: Any) -> APIRouter:
    """Routes for tokens, audit, quotes, pending requests and domain info; each checks the
    caller's permission. `ledger` is the privacy ledger the quotes read, `pending` the
    index of undecided requests (`server/pending_requests.py`)."""
    router = APIRouter()

    def caller(request: Request, action: str, what: str) -> Any:
        return route_caller(gate, request, action, what)

    @router.get("/info")
    def info() -> dict:
        from domain_setup.aggregation_key import published_public_key_text

        return {"name": config.name, "id": str(worker.id),
                "aggregation_public_key": published_public_key_text(state)}

    @router.get("/policies")
    def policies_in_force(request: Request) -> Any:
        caller(request, "read_audit", "read the policy snapshot")
        return {"policies": gate.policies.current.describe()}

    @router.post("/policies/reload")
    def reload_policies(request: Request) -> Any:
        account = caller(request, "change_settings", "reload the policies")
        try:
            snapshot = gate.policies.reload()
        except PneumoSyftError as exc:
            gate.audit.record(account.email, "policies.reload", outcome="refused",
                              reason=str(exc))
            return _error(400, str(exc))
        gate.audit.record(account.email, "policies.reload", target=snapshot.digest[:16])
        return {"policies": snapshot.describe()}

    @router.get("/requests/pending")
    def pending_requests(request: Request) -> Any:
        caller(request, "approve_requests", "list pending requests")
        return {"pending": pending.ids()}

    @router.get("/requests/{request_id}/quote")
    def quote(request_id: str, request: Request) -> Any:
        from domain_setup.aggregation_key import published_public_key
        from domain_setup.server.request_quote import quote_request

        caller(request, "approve_requests", "quote requests")
        wanted = request_id.strip().lower().replace("-", "")
        code = syft_compat.request_code(worker, wanted) if _REQUEST_ID.fullmatch(wanted) else None
        if code is None:
            return _error(404, f"no request with id {request_id[:64]!r}")
        quote = quote_request(worker, gate.policies.current, ledger, code,
                              own_key=published_public_key(state))
        return {"quote": {**quote, "reason": syft_compat.request_reason(worker, wanted)}}

    @router.post("/requests/{request_id}/override")
    async def register_override(request_id: str, request: Request) -> Any:
        account = caller(request, "approve_requests", "approve requests")
        try:
            reason = str((await _json_object(request))["reason"]).strip()[:500]
        except (ValueError, KeyError, TypeError):
            return _error(400, "body must be JSON with 'reason'")
        wanted = request_id.strip().lower().replace("-", "")
        if not reason:
            return _error(400, "an override needs a reason")
        if not _REQUEST_ID.fullmatch(wanted) or not syft_compat.request_exists(worker, wanted):
            return _error(404, f"no request with id {request_id[:64]!r}")
        overrides.register(wanted, account.email, reason)
        return {"override": {"request": wanted, "expires_in_seconds": OVERRIDE_TTL_SECONDS}}

    @router.get("/tokens")
    def list_tokens(request: Request) -> Any:
        caller(request, "issue_tokens", "list tokens")
        return {"tokens": gate.authority.list_tokens()}

    @router.post("/tokens")
    async def issue_token(request: Request) -> Any:
        account = caller(request, "issue_tokens", "issue tokens")
        try:
            email, ttl, asked_role = _token_request(await _json_object(request))
        except (ValueError, KeyError, TypeError):
            return _error(400, "body must be JSON with 'email' and optionally 'role' and 'ttl'")
        except PneumoSyftError as exc:
            return _error(400, str(exc))
        subject = gate.accounts.by_email(email)
        if subject is None:
            return _error(404, f"no account for {email}; create it first (accounts apply)")
        role = asked_role or subject.role
        if role not in ROLES:
            return _error(400, f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if role != subject.role and not role_below(role, subject.role):
            return _error(400, f"{email} is a {subject.role}; a token cannot carry a higher role")
        token, claims = gate.authority.issue(subject.email, role, ttl_seconds=ttl)
        gate.audit.record(account.email, "token.issue", target=claims["jti"],
                          subject=subject.email, role=role, exp=claims["exp"])
        return {"token": token, "claims": claims}

    @router.post("/tokens/{jti}/revoke")
    async def revoke_token(jti: str, request: Request) -> Any:
        account = caller(request, "revoke_tokens", "revoke tokens")
        try:
            body = await request.json() if await request.body() else {}
            record = gate.authority.revoke(jti, reason=str(body.get("reason", "")))
        except PneumoSyftError as exc:
            gate.audit.record(account.email, "token.revoke", target=jti[:64],
                              outcome="refused", reason=str(exc))
            return _error(404, str(exc))
        gate.audit.record(account.email, "token.revoke", target=jti, reason=record.get("reason", ""))
        return {"revoked": record}

    @router.get("/audit")
    def read_audit(request: Request, since: str | None = None, actor: str | None = None,
                   action: str | None = None, limit: int | None = None,
                   outcome: str | None = None, until: str | None = None,
                   offset: int = 0, newest_first: bool = False) -> Any:
        caller(request, "read_audit", "read the audit log")
        try:
            since_dt = parse_since(since) if since else None
            until_dt = parse_since(until) if until else None
        except PneumoSyftError as exc:
            return _error(400, str(exc))
        if newest_first:  # a page of the log, newest first (the console's audit page)
            if not (0 <= offset and 0 < (limit or 100) <= 1000):
                return _error(400, "offset must be at least 0 and limit 1 to 1000")
            return {"entries": gate.audit.page(actor=actor, action=action, outcome=outcome,
                                               since=since_dt, until=until_dt, offset=offset,
                                               limit=limit or 100)}
        if outcome or until or offset:
            return _error(400, "outcome, until and offset need newest_first=true")
        return {"entries": gate.audit.read(since=since_dt, actor=actor, action=action,
                                           limit=limit)}

    @router.post("/audit")
    async def record_audit(request: Request) -> Any:
        try:
            entry = _audit_entry(await _json_object(request))
        except (ValueError, KeyError, TypeError):
            caller(request, "read_audit", "write the audit log")
            return _error(400, "body must be JSON with 'action' (and 'target', 'outcome', 'details')")
        account = caller(request, permission_to_record(entry["action"]),
                         f"record {entry['action']} in the audit log")
        gate.audit.record(account.email, entry.pop("action"), **entry)
        return {"recorded": True}

    return router

