"""The domain's privacy routes (under /pneumosyft/privacy), each checking the caller.

    GET  /privacy                  every researcher's account on every dataset (data owner, admin)
    GET  /privacy/me               the caller's own accounts (any account)
    GET  /privacy/{email}          one researcher's accounts with their releases (approvers)
    POST /privacy/{email}/grant    {"dataset", "epsilon", "reason"}: add to a budget (admin)
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request

from domain_setup.server.privacy_ledger import Account, PrivacyLedger
from domain_setup.server.routes import RouteRefusal, _error, _json_object, route_caller

MAX_GRANT_EPSILON = 100.0


def account_view(account: Account, budget: float, *, releases: bool = False) -> dict:
    """A ledger account as JSON: spent (composed), the plain sum, budget, left."""
    view = {"email": account.email, "dataset": account.dataset, "spent": account.spent,
            "spent_sum": account.spent_sum, "granted": account.granted,
            "budget": budget + account.granted, "left": account.left(budget),
            "releases": len(account.charged)}
    if releases:
        view["history"] = [{"request": r.request_id, "kind": r.kind, "epsilon": r.epsilon,
                            "status": r.status, "at": r.at, "mechanism": r.mechanism.to_dict()}
                           for r in account.releases]
    return view


def make_privacy_router(worker: Any, gate: Any, ledger: PrivacyLedger) -> APIRouter:
    """The routes of the module docstring, over `ledger` and the policies in force."""
    router = APIRouter()

    def accounts_of(email: str, role: str, *, releases: bool = False) -> list[dict]:
        policies = gate.policies.current
        groups = policies.groups_of(email)
        views = []
        for name, rules in sorted(policies.privacy.datasets.items()):
            budget = rules.budget_for(email, groups, role)
            account = ledger.account(email, name, delta=rules.delta)
            if budget or account.releases or account.granted:
                views.append(dict(account_view(account, budget, releases=releases),
                                  delta=rules.delta))
        return views

    def researcher(email: str) -> Any:
        wanted = gate.accounts.by_email(email.strip())
        if wanted is None:
            raise RouteRefusal(404, f"no account for {email[:100]!r}")
        return wanted

    @router.get("")
    def every_account(request: Request) -> Any:
        route_caller(gate, request, "approve_requests", "read the privacy ledger")
        views = []
        for account in gate.policies.current.accounts:
            known = gate.accounts.by_email(account.email)
            if known is not None:
                views += accounts_of(known.email, known.role)
        return {"accounts": views}

    @router.get("/me")
    def my_accounts(request: Request) -> Any:
        account = route_caller(gate, request, None, "read a privacy budget")
        return {"accounts": accounts_of(account.email, account.role, releases=True)}

    @router.get("/{email}")
    def one_researcher(email: str, request: Request) -> Any:
        route_caller(gate, request, "approve_requests", "read the privacy ledger")
        wanted = researcher(email)
        return {"accounts": accounts_of(wanted.email, wanted.role, releases=True)}

    @router.post("/{email}/grant")
    async def grant(email: str, request: Request) -> Any:
        admin = route_caller(gate, request, "change_settings", "grant privacy budget")
        wanted = researcher(email)
        try:
            body = await _json_object(request)
            dataset, epsilon, reason = (str(body["dataset"]), body["epsilon"],
                                        str(body["reason"]).strip()[:300])
        except (ValueError, KeyError, TypeError):
            return _error(400, "body must be JSON with 'dataset', 'epsilon' and 'reason'")
        rules = gate.policies.current.privacy.dataset(dataset)
        if rules is None:
            return _error(404, f"dataset {dataset[:64]!r} has no privacy rules in privacy.yaml")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) \
                or not math.isfinite(epsilon) or not 0 < epsilon <= MAX_GRANT_EPSILON:
            return _error(400, f"epsilon must be a number above 0 and at most "
                               f"{MAX_GRANT_EPSILON:g}")
        if not reason:
            return _error(400, "a grant needs a reason")
        ledger.grant(wanted.email, dataset, float(epsilon), reason=reason,
                     granted_by=admin.email)
        gate.audit.record(admin.email, "privacy.grant", target=wanted.email, dataset=dataset,
                          epsilon=f"{float(epsilon):g}", reason=reason)
        return {"accounts": accounts_of(wanted.email, wanted.role, releases=True)}

    return router
