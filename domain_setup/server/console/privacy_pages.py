"""The privacy page: ε spent (composed) and the budget of every researcher on every
dataset, each release, a plot of ε over time, and grants of more budget (with a reason,
audited; granting needs change_settings, as on the API)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from domain_setup.server.console import render
from domain_setup.server.console.context import Console, Denied


def privacy_view(admin: Any) -> tuple[list[dict], list[dict], dict]:
    """(accounts, releases newest first, plot series): every account, and for each
    researcher with releases, her releases and her cumulative charged ε over time."""
    accounts = admin.privacy_accounts()
    releases, series = [], {}
    for email in sorted({a["email"] for a in accounts if a["releases"]}):
        for account in admin.privacy_accounts(email):
            total, line = 0.0, []
            for release in sorted(account.get("history", []), key=lambda r: r["at"]):
                releases.append({**release, "email": email, "dataset": account["dataset"]})
                if release["status"] == "charged":
                    total += float(release["epsilon"])
                    line.append((float(release["at"]), total))
            if line:
                series[f"{email} on {account['dataset']} (sum; composed "
                       f"{account['spent']:.2f})"] = line
    releases.sort(key=lambda r: r["at"], reverse=True)
    return accounts, releases, series


def register(router: Any, console: Console) -> None:
    """The privacy routes."""

    @router.get("/privacy")
    async def privacy_page(request: Request) -> Any:
        session = console.user(request, "approve_requests")
        accounts, releases, series = await console.act(session, privacy_view)
        return console.page(session, "privacy.html", accounts=accounts, releases=releases,
                            plot=render.epsilon_plot(series),
                            may_grant=console.may(session, "change_settings"))

    @router.post("/privacy/grant")
    async def grant(request: Request) -> Any:
        session = console.user(request, "change_settings")
        fields = await console.form(request, session)
        try:
            epsilon = float(fields.get("epsilon", ""))
        except ValueError:
            raise Denied(400, "ε must be a number") from None
        email, dataset = fields.get("email", ""), fields.get("dataset", "")
        return await console.act_then(
            session, lambda admin: admin.grant_privacy(email, dataset=dataset, epsilon=epsilon,
                                                       reason=fields.get("reason", "")),
            f"granted ε {epsilon:g} to {email[:100]} on {dataset[:64]}", "/admin/privacy")
