"""The accounts page (list, create, change role, remove: manage_accounts) and the tokens
page (issue, shown once; list; revoke: issue_tokens / revoke_tokens)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from common import syft_compat
from domain_setup.policy.roles import ROLES
from domain_setup.server.console.context import Console
from domain_setup.state import generate_password


def account_rows(admin: Any) -> list[dict]:
    return sorted(({"email": u.email, "name": u.name, "role": syft_compat.role_of(u),
                    "institution": u.institution or ""} for u in admin.users()),
                  key=lambda row: row["email"])


def register(router: Any, console: Console) -> None:
    """The accounts and tokens routes."""

    @router.get("/accounts")
    async def accounts_page(request: Request) -> Any:
        session = console.user(request, "manage_accounts")
        rows = await console.act(session, account_rows)
        return console.page(session, "accounts.html", rows=rows, roles=ROLES,
                            root=console.config.admin_email.lower())

    @router.post("/accounts/create")
    async def create(request: Request) -> Any:
        session = console.user(request, "manage_accounts")
        fields = await console.form(request, session)
        password = fields.get("password") or generate_password()
        email = fields.get("email", "").strip().lower()
        await console.act(session, lambda admin: admin.create_user(
            email, name=fields.get("name", ""), role=fields.get("role", ""),
            password=password, institution=fields.get("institution", "")))
        return console.page(session, "shown_once.html", title="Account created",
                            what=f"The password of {email}", secret=password,
                            back="/admin/accounts")

    @router.post("/accounts/role")
    async def change_role(request: Request) -> Any:
        session = console.user(request, "manage_accounts")
        fields = await console.form(request, session)
        email, role = fields.get("email", ""), fields.get("role", "")
        return await console.act_then(session, lambda admin: admin.change_role(email, role),
                                      f"{email[:100]} is now {role[:20]}", "/admin/accounts")

    @router.post("/accounts/remove")
    async def remove(request: Request) -> Any:
        session = console.user(request, "manage_accounts")
        email = (await console.form(request, session)).get("email", "")
        return await console.act_then(session, lambda admin: admin.remove_user(email),
                                      f"{email[:100]} removed", "/admin/accounts")

    @router.get("/tokens")
    async def tokens_page(request: Request) -> Any:
        session = console.user(request, "issue_tokens")
        tokens = await console.act(session, lambda admin: admin.tokens())
        tokens.sort(key=lambda t: t.get("iat", 0), reverse=True)
        return console.page(session, "tokens.html", tokens=tokens, roles=ROLES,
                            may_revoke=console.may(session, "revoke_tokens"))

    @router.post("/tokens/issue")
    async def issue(request: Request) -> Any:
        session = console.user(request, "issue_tokens")
        fields = await console.form(request, session)
        token, claims = await console.act(session, lambda admin: admin.issue_token(
            fields.get("email", ""), role=fields.get("role") or None,
            ttl=fields.get("ttl") or "8h"))
        return console.page(session, "shown_once.html", title="Token issued",
                            what=f"A {claims['role']} token for {claims['sub']} (id "
                                 f"{claims['jti']})", secret=token, back="/admin/tokens")

    @router.post("/tokens/revoke")
    async def revoke(request: Request) -> Any:
        session = console.user(request, "revoke_tokens")
        fields = await console.form(request, session)
        jti = fields.get("jti", "")
        return await console.act_then(
            session, lambda admin: admin.revoke_token(jti, reason=fields.get("reason", "")),
            f"token {jti[:40]} revoked", "/admin/tokens")
