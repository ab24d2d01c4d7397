"""PneumoSyft's own HTTP routes on the domain (under /pneumosyft, behind the gate).

    GET  /pneumosyft/info                 domain name, id, aggregation public key
    GET  /pneumosyft/tokens               list issued tokens        (issue_tokens)
    POST /pneumosyft/tokens               issue a token             (issue_tokens)
    POST /pneumosyft/tokens/{jti}/revoke  revoke a token            (revoke_tokens)
    GET  /pneumosyft/audit                read the audit log        (read_audit)
    POST /pneumosyft/audit                record an admin action    (read_audit)

The admin CLI talks to these, as a remote admin would.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from common.errors import PneumoSyftError
from domain_setup.audit import parse_since
from domain_setup.tokens import ROLES as VALID_ROLES
from domain_setup.tokens import parse_ttl


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def make_domain_router(state: Any, config: Any, worker: Any, gate: Any) -> APIRouter:
    """Routes for tokens, audit and domain info; each checks the caller's permission."""
    router = APIRouter()

    def caller(request: Request, action: str) -> Any:
        claims = request.state.claims
        account = gate.accounts.by_email(claims["sub"])
        if account is None or not gate.permissions.role_may(account.role, action):
            role = account.role if account else "unknown"
            gate.audit.record(claims["sub"], action, outcome="refused", reason=f"role {role}")
            return None
        return account

    @router.get("/info")
    def info() -> dict:
        from domain_setup.aggregation_key import public_key_text

        return {"name": config.name, "id": str(worker.id),
                "aggregation_public_key": public_key_text(state)}

    @router.get("/tokens")
    def list_tokens(request: Request) -> Any:
        if caller(request, "issue_tokens") is None:
            return _error(403, "your role may not list tokens")
        return {"tokens": gate.authority.list_tokens()}

    @router.post("/tokens")
    async def issue_token(request: Request) -> Any:
        account = caller(request, "issue_tokens")
        if account is None:
            return _error(403, "your role may not issue tokens")
        try:
            body = await request.json()
            email = str(body["email"])
            ttl = parse_ttl(str(body.get("ttl", "8h")))
        except (ValueError, KeyError, TypeError):
            return _error(400, "body must be JSON with 'email' and optionally 'role' and 'ttl'")
        except PneumoSyftError as exc:
            return _error(400, str(exc))
        subject = gate.accounts.by_email(email)
        if subject is None:
            return _error(404, f"no account for {email}; create it first (accounts apply)")
        role = str(body.get("role") or subject.role)
        if role not in VALID_ROLES:
            return _error(400, f"unknown role {role!r}; one of {', '.join(VALID_ROLES)}")
        if role != subject.role and not _role_below(role, subject.role):
            return _error(400, f"{email} is a {subject.role}; a token cannot carry a higher role")
        token, claims = gate.authority.issue(subject.email, role, ttl_seconds=ttl)
        gate.audit.record(account.email, "token.issue", target=claims["jti"],
                          subject=subject.email, role=role, exp=claims["exp"])
        return {"token": token, "claims": claims}

    @router.post("/tokens/{jti}/revoke")
    async def revoke_token(jti: str, request: Request) -> Any:
        account = caller(request, "revoke_tokens")
        if account is None:
            return _error(403, "your role may not revoke tokens")
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
                   action: str | None = None, limit: int | None = None) -> Any:
        if caller(request, "read_audit") is None:
            return _error(403, "your role may not read the audit log")
        try:
            since_dt = parse_since(since) if since else None
        except PneumoSyftError as exc:
            return _error(400, str(exc))
        return {"entries": gate.audit.read(since=since_dt, actor=actor, action=action,
                                           limit=limit)}

    @router.post("/audit")
    async def record_audit(request: Request) -> Any:
        account = caller(request, "read_audit")
        if account is None:
            return _error(403, "your role may not write the audit log")
        try:
            body = await request.json()
            action = str(body["action"])[:100]
            target = str(body.get("target", ""))[:200]
            outcome = str(body.get("outcome", "ok"))[:50]
            details = {str(k)[:50]: str(v)[:500] for k, v in dict(body.get("details", {})).items()}
        except (ValueError, KeyError, TypeError):
            return _error(400, "body must be JSON with 'action' (and 'target', 'outcome', 'details')")
        gate.audit.record(account.email, action, target=target, outcome=outcome, **details)
        return {"recorded": True}

    return router


def _role_below(role: str, other: str) -> bool:
    return VALID_ROLES.index(role) < VALID_ROLES.index(other)
