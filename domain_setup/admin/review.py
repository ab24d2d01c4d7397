"""`review`: the admin reads researchers' requests and approves or denies them.

Each request gets the domain's verdict (`domain_setup.vetting.verdicts`): a vetted
plan kind of the registry that fits its schema, custom code (with the linter's
findings as notes), or a violation; the domain's quote (privacy cost, a secure round's
parties) adds its problems. Anything but a vetted plan is approved only with
``override=True`` and a reason: the override is registered with the domain, which
checks it when the approval arrives and audits both with the code's hash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from common import syft_compat
from common.errors import DomainError
from common.syft_requests import get_request, is_pending, request_status
from domain_setup.vetting.registry import identify
from domain_setup.vetting.verdicts import Verdict, asset_names_of, code_bindings, judge_code

_UID_RE = re.compile(r"^[0-9a-f]{8,32}$")


@dataclass
class RequestSummary:
    """What an admin sees of one request."""

    id: str
    requester: str
    function: str
    status: str
    created: str
    code: str = ""
    inputs: dict = field(default_factory=dict)
    constants: dict = field(default_factory=dict)
    verdict_ok: bool = True
    verdict_reasons: list = field(default_factory=list)
    verdict: Verdict | None = None
    limits: str = ""  # the sandbox limits its run will have
    returns: str = ""  # the output contract its result must meet
    privacy: dict = field(default_factory=dict)  # the domain's privacy quote
    round: dict | None = None  # a secure round's id, parties (by name) and problems
    releases: list = field(default_factory=list)  # (field, bound, why) its kind may release
    reason: str = ""  # why the requester asks (as she wrote it)
    code_id: str = ""  # its code's id: the target of its runs in the audit log


def normalise_request_id(text: str) -> str:
    """A request id (32 hex digits, dashes allowed) or a unique prefix of at least 8."""
    cleaned = (text or "").strip().lower().replace("-", "")
    if not _UID_RE.match(cleaned):
        raise DomainError(f"invalid request id {text!r}: expected 8 to 32 hex digits")
    return cleaned


def summarise(request: Any, approval_rules: Any, asset_names: dict[str, str],
              quote: dict | None = None) -> RequestSummary:
    """Requester, code, inputs and the approval verdict of a syft request (with the
    domain's quote, whose problems are part of the verdict)."""
    code = request.code
    inputs, constants = code_bindings(code, asset_names)
    quote = quote or {}
    verdict = judge_code(code, inputs, constants, approval_rules,
                         domain_problems=quote.get("problems", ()))
    return RequestSummary(
        id=str(request.id.no_dash), requester=request.requesting_user_email or "?",
        function=code.service_func_name, status=request_status(request),
        created=str(request.request_time)[:19], code=code.raw_code, inputs=inputs,
        constants={k: _describe_constant(v) for k, v in constants.items()},
        verdict_ok=not verdict.needs_override, verdict_reasons=verdict.all_reasons(),
        verdict=verdict, privacy=quote.get("privacy") or {}, round=quote.get("round"),
        releases=[(r.field, r.bound.value, r.what) for r in identify(code.raw_code).releases],
        reason=str(quote.get("reason") or ""), code_id=str(code.id.no_dash))


def _describe_constant(value: Any) -> Any:
    if isinstance(value, dict) and value and all(hasattr(v, "shape") for v in value.values()):
        return f"{len(value)} arrays ({sum(int(v.size) for v in value.values())} values)"
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes"
    return value


class Reviewer:
    """Review actions on one domain, through the admin's syft client."""

    def __init__(self, session: Any, approval_rules: Any):
        self.session = session
        self.rules = approval_rules
        self.client = session.client()

    def _asset_names(self) -> dict[str, str]:
        return asset_names_of(self.client.datasets.get_all())

    def _requests(self, *, pending_only: bool = False) -> list:
        """Code requests. The pending ones: the domain's index of undecided requests, then
        one fetch each, so a pass costs what is pending, not every request ever made.
        All of them: one fetch of every request."""
        if pending_only:
            requests = []
            for request_id in self.session.request("GET", "/pneumosyft/requests/pending")["pending"]:
                try:
                    requests.append(get_request(self.client, request_id))
                except DomainError:  # decided and gone since the index was read
                    continue
        else:
            requests = self.client.requests.get_all()
        return [r for r in requests
                if (is_pending(r) or not pending_only) and syft_compat.is_user_code(r.code)]

    def list(self, *, pending_only: bool = False) -> list[RequestSummary]:
        """Requests with their verdicts: every one, or the pending ones only."""
        requests = self._requests(pending_only=pending_only)
        if not requests:
            return []
        names = self._asset_names()
        return [self._summarise(r, names) for r in requests]

    def page(self, number: int, size: int) -> tuple[list[RequestSummary], int, int]:
        """(summaries of page `number`, pending count, total): every request ordered pending
        first then newest first from one fetch of them all; only the page's own requests
        are judged (resolving a request's code is one call each: 500 took 11 s), the
        pending ones with the domain's quote. syft's other kinds of request are left out
        of the page."""
        requests = list(self.client.requests.get_all())
        requests.sort(key=lambda r: str(r.request_time), reverse=True)
        requests.sort(key=lambda r: not is_pending(r))  # stable: newest first within each
        shown = [r for r in requests[(number - 1) * size:number * size]
                 if syft_compat.is_user_code(r.code)]
        names = self._asset_names() if shown else {}
        rows = [self._summarise(r, names) if is_pending(r) else summarise(r, self.rules, names)
                for r in shown]
        return rows, sum(map(is_pending, requests)), len(requests)

    def _summarise(self, request: Any, names: dict[str, str] | None = None) -> RequestSummary:
        quote = self.session.request("GET", f"/pneumosyft/requests/"
                                            f"{request.id.no_dash}/quote")["quote"]
        return summarise(request, self.rules, self._asset_names() if names is None else names,
                         quote)

    def find(self, request_id: str) -> Any:
        """The code request with this id or unique id prefix (one fetch for a full id)."""
        wanted = normalise_request_id(request_id)
        if len(wanted) == 32:
            try:
                matches = [get_request(self.client, wanted)]
            except DomainError:
                matches = []
        else:  # compare ids only: a request's code is fetched just for the match
            matches = [r for r in self.client.requests.get_all()
                       if str(r.id.no_dash).startswith(wanted)]
        if len(matches) > 1:
            raise DomainError(f"request id prefix {request_id} is ambiguous; give more digits")
        if not matches or not syft_compat.is_user_code(matches[0].code):
            raise DomainError(f"no request with id {request_id}")
        return matches[0]

    def show(self, request_id: str) -> RequestSummary:
        """One request with its verdict, the sandbox limits and the output contract."""
        summary = self._summarise(self.find(request_id))
        summary.limits = self._limits().describe()
        summary.returns = (f"the {summary.verdict.plan} output contract (exact keys, the "
                           "model's weight names, shapes and dtypes, finite values)"
                           if summary.verdict.plan else
                           "plain data only (arrays, numbers, strings; lists, tuples, dicts) "
                           f"up to {self.rules.custom_max_result_bytes // 1024} KB encoded")
        return summary

    def _limits(self) -> Any:
        from domain_setup.policy.approval import sandbox_limits

        return sandbox_limits(self.rules, self.session.state.load_config().extra)

    def approve(self, request_id: str, *, override: bool = False, reason: str = "") -> RequestSummary:
        request = self.find(request_id)
        return self._approve(request, self._summarise(request), override=override, reason=reason)

    def _approve(self, request: Any, summary: RequestSummary, *, override: bool = False,
                 reason: str = "") -> RequestSummary:
        if summary.status != "pending":
            raise DomainError(f"request {summary.id} is {summary.status}, not pending")
        verdict = summary.verdict
        if verdict.needs_override and not override:
            what = ("is custom code: needs an admin's review" if verdict.kind == "custom"
                    else "violates the approval rules")
            raise DomainError(f"request {summary.id} {what} "
                              f"({'; '.join(summary.verdict_reasons)}); "
                              "approve anyway only with --override --reason TEXT")
        if override and not reason.strip():
            raise DomainError("--override needs --reason TEXT")
        if override:  # the domain checks the override when the approval arrives
            self.session.request("POST", f"/pneumosyft/requests/{summary.id}/override",
                                 json={"reason": reason})
        # request.apply, not request.approve: approve() re-fetches the server metadata and
        # the code and prints to stdout. The domain audits the approval with the code hash.
        try:
            result = self.client.api.services.request.apply(uid=request.id)
        except Exception as exc:  # syft raises SyftException subclasses with a public message
            raise DomainError(f"approval failed: {syft_compat.error_text(exc)}") from None
        if syft_compat.is_syft_error(result):
            raise DomainError(f"approval failed: {syft_compat.error_text(result)}")
        summary.status = "approved"
        return summary

    def deny(self, request_id: str, *, reason: str) -> RequestSummary:
        if not reason.strip():
            raise DomainError("deny needs --reason TEXT")
        request = self.find(request_id)
        return self._deny(request, summarise(request, self.rules, self._asset_names()),
                          reason=reason)

    def _deny(self, request: Any, summary: RequestSummary, *, reason: str) -> RequestSummary:
        if summary.status != "pending":
            raise DomainError(f"request {summary.id} is {summary.status}, not pending")
        request.deny(reason=reason)
        self.session.audit("request.deny", target=summary.id, requester=summary.requester,
                           function=summary.function, reason=reason)
        summary.status = "rejected"
        return summary

    def auto(self, *, approve_compliant: bool = False) -> list[tuple[RequestSummary, str]]:
        """Deny violating pending requests (and custom code the linter finds fault with);
        optionally approve the vetted plans that comply. Other custom code is never
        decided automatically: it stays pending for an admin."""
        done = []
        pending = self._requests(pending_only=True)  # decided ones cost nothing here
        names = self._asset_names() if pending else {}
        for request in pending:
            summary = self._summarise(request, names)
            kind = summary.verdict.kind
            if kind == "violating" or (kind == "custom" and summary.verdict.notes):
                self._deny(request, summary, reason="violates approval rules: "
                           + "; ".join(summary.verdict_reasons))
                done.append((summary, "denied"))
            elif kind == "custom":
                done.append((summary, "left pending (custom code: needs an admin's review)"))
            elif approve_compliant:
                try:
                    self._approve(request, summary)
                except DomainError as exc:  # one failure does not stop the pass
                    done.append((summary, f"left pending ({exc})"))
                    continue
                done.append((summary, "approved"))
            else:
                done.append((summary, "left pending (vetted plan, complies)"))
        return done
