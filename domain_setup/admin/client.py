"""`AdminClient`: one Python entry point for everything the hospital admin does.

The CLI (`python -m domain_setup`), notebook 00, the demos and the tests are thin
layers over it. It talks to the running domain over HTTP with the admin token the
domain wrote into its state directory, as a remote admin would; only `start`
runs on the server itself.

    admin = AdminClient.start("/srv/pneumosyft", name="St Mary", port=8081)
    admin.upload("synthetic", "xray", n=3000, size=64)
    admin.apply_accounts("policies/accounts.yaml")
    admin.write_researcher_file("ada@pneumosyft-research.org", "ada.json", ttl="8h")
    for request in admin.requests():
        print(request.id, request.function, request.verdict_ok)
    admin.approve(request.id)
    admin.audit(since="1h")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from common.errors import DomainError
from domain_setup.state import StateDir


class AdminClient:
    """The hospital admin's handle on one domain (its state directory)."""

    def __init__(self, state_dir: str | Path | StateDir, *, session: Any = None,
                 approval_rules: Any = None):
        """`session` acts as another account than the root admin (the web console's
        logged-in user, `domain_setup.server.console`); `approval_rules` are the rules in
        force when the caller holds them already (the server does)."""
        self.state = state_dir if isinstance(state_dir, StateDir) else StateDir(state_dir)
        self._session: Any = session
        self._reviewer: Any = None
        self._rules: Any = approval_rules

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    def start(cls, state_dir: str | Path, *, name: str | None = None, port: int | None = None,
              host: str | None = None, db_url: str | None = None, policies: str | None = None,
              admin_email: str | None = None, jwt_algorithm: str | None = None,
              operating: dict | None = None, insecure_http: bool = False,
              tls_cert: str | None = None, tls_key: str | None = None,
              tls_self_signed: bool = False,
              progress: Callable[[str], None] = print) -> "AdminClient":
        """Start the domain of `state_dir` (a new one needs `name` and `port`); `operating`
        sets operating limits by key (`domain_setup.operating_limits`, e.g.
        ``{"max_concurrent_runs": 2}``); `insecure_http` lets this start serve plain HTTP
        on a non-loopback `host` (`domain_setup.exposure`); `tls_cert` and `tls_key`, or
        `tls_self_signed`, serve HTTPS (`domain_setup.tls_certificate`)."""
        from domain_setup.admin import lifecycle

        admin = cls(state_dir)
        config = lifecycle.resolve_config(
            admin.state, name=name, port=port, host=host, db_url=db_url, policies=policies,
            admin_email=admin_email, jwt_algorithm=jwt_algorithm, operating=operating,
            insecure_http=insecure_http, tls_cert=tls_cert, tls_key=tls_key,
            tls_self_signed=tls_self_signed)
        lifecycle.start(admin.state, config, progress=progress)
        return admin

    def stop(self) -> bool:
        """Stop the domain; False when it was not running."""
        from domain_setup.admin import lifecycle

        self._session = self._reviewer = None
        return lifecycle.stop(self.state)

    def status(self) -> dict:
        """Name, URL, pid, health and database of the domain."""
        from domain_setup.admin import lifecycle

        return lifecycle.status(self.state)

    # -- connection --------------------------------------------------------------------
    @property
    def session(self) -> Any:
        """The HTTP session with the running domain (URL, admin token, syft client)."""
        if self._session is None:
            from domain_setup.admin.session import AdminSession

            self._session = AdminSession(self.state)
        return self._session

    def syft_client(self) -> Any:
        """The syft client logged in as the root admin, through the gate."""
        return self.session.client()

    @property
    def url(self) -> str:
        return self.session.url

    # -- data and accounts -------------------------------------------------------------
    def upload(self, source: str, name: str, *, size: int = 64, n: int = 3000, seed: int = 0,
               replace: bool = False, partition: tuple[int, int] | None = None,
               label_skew: float | None = None, progress: bool = True) -> Any:
        """Upload X-rays from `source` (synthetic | pneumoniamnist:PATH | folder:PATH)."""
        from domain_setup.admin.upload import upload

        return upload(self.session, source, name, size=size, n=n, seed=seed, replace=replace,
                      show_progress=progress, partition=partition, label_skew=label_skew)

    def datasets(self) -> list[str]:
        """Names of the domain's datasets."""
        return [d.name for d in self.syft_client().datasets.get_all()]

    def apply_accounts(self, path: str | Path) -> list[dict]:
        """Make the users match an accounts YAML; one row per account."""
        from domain_setup.admin.accounts import apply_accounts

        return apply_accounts(self.session, path)

    def users(self) -> list:
        """The domain's syft users."""
        return list(self.syft_client().api.services.user.get_all())

    def create_user(self, email: str, *, name: str, role: str, password: str,
                    institution: str = "") -> None:
        """Create an account (audited); `role` is data_scientist, data_owner or admin."""
        from domain_setup.admin.accounts import create_user

        create_user(self.session, email, name=name, role=role, password=password,
                    institution=institution)

    def change_role(self, email: str, role: str) -> None:
        """Give an account another role (audited)."""
        from domain_setup.admin.accounts import change_role

        change_role(self.session, email, role)

    def remove_user(self, email: str) -> None:
        """Delete an account (audited); the root admin cannot be removed."""
        from domain_setup.admin.accounts import remove_user

        remove_user(self.session, email)

    # -- tokens ------------------------------------------------------------------------
    def issue_token(self, email: str, *, role: str | None = None,
                    ttl: str = "8h") -> tuple[str, dict]:
        """A new JWT for `email` (default: the account's role); returns (token, claims)."""
        body = {"email": email, "ttl": ttl, **({"role": role} if role else {})}
        result = self.session.request("POST", "/pneumosyft/tokens", json=body)
        return result["token"], result["claims"]

    def write_researcher_file(self, email: str, path: str | Path, *, ttl: str = "8h",
                              role: str | None = None) -> Path:
        """Issue a token and write the researcher's connection file (0600)."""
        from domain_setup.admin.researcher_file import write_researcher_file

        token, _claims = self.issue_token(email, role=role, ttl=ttl)
        return write_researcher_file(path, self.state, self.url, email, token)

    def tokens(self) -> list[dict]:
        return self.session.request("GET", "/pneumosyft/tokens")["tokens"]

    def revoke_token(self, jti: str, *, reason: str = "") -> dict:
        return self.session.request("POST", f"/pneumosyft/tokens/{jti}/revoke",
                                    json={"reason": reason})["revoked"]

    # -- review ------------------------------------------------------------------------
    @property
    def reviewer(self) -> Any:
        """The `Reviewer` on the policy snapshot the domain has in force."""
        if self._reviewer is None:
            from domain_setup.admin.review import Reviewer

            self._reviewer = Reviewer(self.session, self._rules or self._approval_rules())
        return self._reviewer

    def _approval_rules(self) -> Any:
        from domain_setup.policy.snapshot import DomainPolicies

        in_force = self.policies()
        local = DomainPolicies.load(Path(in_force["directory"]))
        if local.digest != in_force["digest"]:
            raise DomainError(f"the policy files in {in_force['directory']} changed since the "
                              f"domain loaded them ({in_force['loaded_at']}); put them in force "
                              "with `python -m domain_setup policies reload` first")
        return local.approval

    def requests(self, *, pending_only: bool = False) -> list:
        """Every code request (or the pending ones) with its verdict (`RequestSummary`)."""
        return self.reviewer.list(pending_only=pending_only)

    def show(self, request_id: str) -> Any:
        return self.reviewer.show(request_id)

    def approve(self, request_id: str, *, override: bool = False, reason: str = "") -> Any:
        """Approve a request; violating code needs `override=True` and a reason."""
        return self.reviewer.approve(request_id, override=override, reason=reason)

    def deny(self, request_id: str, *, reason: str) -> Any:
        return self.reviewer.deny(request_id, reason=reason)

    def auto_review(self, *, approve_compliant: bool = False) -> list:
        """Deny every violating pending request (and approve compliant ones if asked)."""
        return self.reviewer.auto(approve_compliant=approve_compliant)

    # -- policies, federation, audit ---------------------------------------------------
    def policies(self) -> dict:
        """The policy snapshot in force: directory, digest, loaded_at."""
        return self.session.request("GET", "/pneumosyft/policies")["policies"]

    def reload_policies(self) -> dict:
        """Validate the policy files and put them in force; returns the new snapshot."""
        self._reviewer = None
        return self.session.request("POST", "/pneumosyft/policies/reload")["policies"]

    def privacy_accounts(self, email: str | None = None) -> list[dict]:
        """Privacy accounts (spent, sum, budget, left; with releases for one `email`)."""
        path = f"/pneumosyft/privacy/{email.strip()}" if email else "/pneumosyft/privacy"
        return self.session.request("GET", path)["accounts"]

    def grant_privacy(self, email: str, *, dataset: str, epsilon: float, reason: str) -> list[dict]:
        """Add `epsilon` to `email`'s budget on `dataset` (audited); returns her accounts."""
        return self.session.request("POST", f"/pneumosyft/privacy/{email.strip()}/grant",
                                    json={"dataset": dataset, "epsilon": epsilon,
                                          "reason": reason})["accounts"]

    def enable_federation(self) -> str:
        """Act as a secure-aggregation party; returns the public key text."""
        from domain_setup.admin.federation import enable_aggregation

        return enable_aggregation(self.session)

    def federation_members(self) -> list[dict]:
        """The hospitals this one runs secure rounds with: name, url, public_key."""
        return self.session.request("GET", "/pneumosyft/federation/members")["members"]

    def add_federation_member(self, name: str, *, url: str, public_key: str,
                              tls_fingerprint: str | None = None,
                              signing_key: str | None = None) -> list[dict]:
        """Add a hospital to the federation (audited); returns the members."""
        body = {"name": name, "url": url, "public_key": public_key,
                "tls_fingerprint": tls_fingerprint, "signing_key": signing_key}
        return self.session.request("POST", "/pneumosyft/federation/members",
                                    json={k: v for k, v in body.items() if v})["members"]

    def federation_card(self, url: str | None = None) -> dict:
        """This hospital's signed federation card (`domain_setup.admin.federation_card`)."""
        from domain_setup.admin.federation_card import make_card

        return make_card(self.state, url=url)

    def add_federation_card(self, path: str | None = None, *,
                            text: str | None = None) -> tuple[dict, list[dict]]:
        """Verify another hospital's card (a file, or its `text`) and add it (audited):
        (card, members)."""
        from domain_setup.admin.federation_card import parse_card, read_card

        card = read_card(path) if text is None else parse_card(text.encode("utf-8"))
        members = self.add_federation_member(
            card["name"], url=card["url"], public_key=card["aggregation_public_key"],
            tls_fingerprint=card.get("tls_fingerprint"), signing_key=card["signing_key"])
        return card, members

    def remove_federation_member(self, name: str) -> list[dict]:
        """Remove a hospital from the federation (audited); returns the members."""
        from urllib.parse import quote

        return self.session.request(
            "DELETE", f"/pneumosyft/federation/members/{quote(name, safe='')}")["members"]

    def jobs(self) -> list[dict]:
        """The federated jobs on this domain: request, job id, requester, round, state."""
        return self.session.request("GET", "/pneumosyft/jobs/")["jobs"]

    def stop_job(self, request_id: str, *, reason: str) -> dict:
        """End a federated job at its next round (audited); returns where it stands."""
        return self.session.request("POST", f"/pneumosyft/jobs/{request_id.strip()}/stop",
                                    json={"reason": reason})

    def audit(self, *, since: str | None = None, actor: str | None = None,
              action: str | None = None, limit: int | None = None) -> list[dict]:
        """Audit log entries, oldest first, filtered like `python -m domain_setup audit`."""
        params = {k: v for k, v in (("since", since), ("actor", actor), ("action", action),
                                    ("limit", limit)) if v}
        return self.session.request("GET", "/pneumosyft/audit", params=params)["entries"]

    def audit_page(self, *, actor: str | None = None, action: str | None = None,
                   outcome: str | None = None, since: str | None = None,
                   until: str | None = None, offset: int = 0, limit: int = 100) -> list[dict]:
        """One page of the audit log, newest first (`AuditLog.page`); `since` and `until`
        as `audit` takes `since` (``1h``, ``2026-12-01``, an ISO time)."""
        params = {k: v for k, v in (("actor", actor), ("action", action), ("outcome", outcome),
                                    ("since", since), ("until", until)) if v}
        return self.session.request("GET", "/pneumosyft/audit", params={
            **params, "offset": offset, "limit": limit, "newest_first": "true"})["entries"]

    def record(self, action: str, target: str = "", outcome: str = "ok", **details: Any) -> None:
        """Append an admin action to the domain's audit log."""
        self.session.audit(action, target=target, outcome=outcome, **details)
