"""The federation's member list, kept by the hospital's admin (under /pneumosyft/federation).

    GET    /members              the members: name, url, aggregation public key (any account)
    POST   /members              {"name", "url", "public_key"[, "tls_fingerprint",
                                 "signing_key"]}: add one (change_settings; the admin
                                 CLI verifies a card's signature before it sends one)
    DELETE /members/{name}       remove one                               (change_settings)

Every change is audited and put in force at once (the policy snapshot the verdict, the
dispatch and the aggregation route decide on); it is kept in the state directory.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from common.errors import PolicyError
from domain_setup.policy.federation import Member
from domain_setup.server.routes import RouteRefusal, _json_object, route_caller


def members_view(policies: Any) -> dict:
    return {"members": [m.to_dict() for m in policies.current.federation.members]}


def make_federation_router(gate: Any) -> APIRouter:
    """The routes of the module docstring, over the domain's live policy snapshot."""
    router = APIRouter()
    policies = gate.policies

    @router.get("/members")
    def list_members(request: Request) -> Any:
        route_caller(gate, request, None, "read the federation")
        return members_view(policies)

    @router.post("/members")
    async def add_member(request: Request) -> Any:
        admin = route_caller(gate, request, "change_settings", "change the federation")
        try:
            body = await _json_object(request)
            member = Member.from_dict(body)
            policies.set_members(policies.current.federation.adding(member))
        except (ValueError, TypeError) as exc:
            raise RouteRefusal(400, "body must be JSON with 'name', 'url' and 'public_key'") \
                from exc
        except PolicyError as exc:
            gate.audit.record(admin.email, "federation.member.add", outcome="refused",
                              reason=str(exc))
            raise RouteRefusal(400, str(exc)) from None
        gate.audit.record(admin.email, "federation.member.add", target=member.name,
                          **{k: v for k, v in member.to_dict().items() if k != "name"})
        return members_view(policies)

    @router.delete("/members/{name}")
    def remove_member(name: str, request: Request) -> Any:
        admin = route_caller(gate, request, "change_settings", "change the federation")
        try:
            policies.set_members(policies.current.federation.removing(name))
        except PolicyError as exc:
            raise RouteRefusal(404, str(exc)) from None
        gate.audit.record(admin.email, "federation.member.remove", target=name[:100])
        return members_view(policies)

    return router
