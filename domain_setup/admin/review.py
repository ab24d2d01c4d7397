"""`review`: the admin reads researchers' requests and approves or denies them.

Each request's code is checked against ``approval.yaml`` (static analysis, no
execution) and its constants (epochs, model, ...) against the same rules. A
violating request can only be approved with ``override=True`` and a reason, which
goes to the audit log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from common import syft_compat
from common.errors import DomainError
from common.syft_requests import get_request, request_status
from domain_setup.code_rules import check_code, check_config

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


def normalise_request_id(text: str) -> str:
    """A request id (32 hex digits, dashes allowed) or a unique prefix of at least 8."""
    cleaned = (text or "").strip().lower().replace("-", "")
    if not _UID_RE.match(cleaned):
        raise DomainError(f"invalid request id {text!r}: expected 8 to 32 hex digits")
    return cleaned


def summarise(request: Any, approval_rules: Any, asset_names: dict[str, str]) -> RequestSummary:
    """Requester, code, inputs and the approval verdict of a syft request."""
    code = request.code
    inputs, constants = {}, {}
    for kwarg, rule in syft_compat.input_policy_rules(code).items():
        value = syft_compat.rule_value(rule)
        if syft_compat.is_constant(rule):
            constants[kwarg] = value
        else:
            inputs[kwarg] = asset_names.get(str(value), f"object {value}")
    # every parameter bound to a dataset is private, whatever the researcher named it
    verdict = check_code(code.raw_code, approval_rules, input_shapes={k: () for k in inputs})
    reasons = list(verdict.reasons)
    if syft_compat.nested_codes(code):
        # approving applies every nested function too, and only this one is checked above
        reasons.append("calls other syft functions (nested code), which the rules do not check")
    config = constants.get("config")
    if isinstance(config, dict):
        reasons += check_config(config, approval_rules)
    return RequestSummary(
        id=str(request.id.no_dash), requester=request.requesting_user_email or "?",
        function=code.service_func_name, status=request_status(request),
        created=str(request.request_time)[:19], code=code.raw_code, inputs=inputs,
        constants={k: _describe_constant(v) for k, v in constants.items()},
        verdict_ok=not reasons, verdict_reasons=reasons)


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
        names = {}
        for dataset in self.client.datasets.get_all():
            for asset in dataset.asset_list:
                names[str(asset.action_id)] = f"{dataset.name}/{asset.name}"
        return names

    def _requests(self) -> list:
        return [r for r in self.client.requests.get_all()
                if syft_compat.is_user_code(r.code)]

    def list(self) -> list[RequestSummary]:
        names = self._asset_names()
        return [summarise(r, self.rules, names) for r in self._requests()]

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
        return summarise(self.find(request_id), self.rules, self._asset_names())

    def approve(self, request_id: str, *, override: bool = False, reason: str = "") -> RequestSummary:
        request = self.find(request_id)
        summary = summarise(request, self.rules, self._asset_names())
        if summary.status != "pending":
            raise DomainError(f"request {summary.id} is {summary.status}, not pending")
        if not summary.verdict_ok and not override:
            raise DomainError(f"request {summary.id} violates the approval rules "
                              f"({'; '.join(summary.verdict_reasons)}); "
                              "approve anyway only with --override --reason TEXT")
        if override and not reason.strip():
            raise DomainError("--override needs --reason TEXT")
        # request.apply, not request.approve: approve() re-fetches the server metadata and
        # the code and prints to stdout; its one check that matters here, refusing nested
        # code, is a rule violation in summarise()
        try:
            result = self.client.api.services.request.apply(uid=request.id)
        except Exception as exc:  # syft raises SyftException subclasses with a public message
            raise DomainError(f"approval failed: {syft_compat.error_text(exc)}") from None
        if syft_compat.is_syft_error(result):
            raise DomainError(f"approval failed: {syft_compat.error_text(result)}")
        self.session.audit("request.override" if not summary.verdict_ok else "request.approve",
                           target=summary.id, requester=summary.requester,
                           function=summary.function, reason=reason,
                           violations="; ".join(summary.verdict_reasons))
        summary.status = "approved"
        return summary

    def deny(self, request_id: str, *, reason: str) -> RequestSummary:
        if not reason.strip():
            raise DomainError("deny needs --reason TEXT")
        request = self.find(request_id)
        summary = summarise(request, self.rules, self._asset_names())
        if summary.status != "pending":
            raise DomainError(f"request {summary.id} is {summary.status}, not pending")
        request.deny(reason=reason)
        self.session.audit("request.deny", target=summary.id, requester=summary.requester,
                           function=summary.function, reason=reason)
        summary.status = "rejected"
        return summary

    def auto(self, *, approve_compliant: bool = False) -> list[tuple[RequestSummary, str]]:
        """Deny pending requests that violate the rules; optionally approve the others."""
        done = []
        for summary in self.list():
            if summary.status != "pending":
                continue
            if not summary.verdict_ok:
                self.deny(summary.id, reason="violates approval rules: "
                          + "; ".join(summary.verdict_reasons))
                done.append((summary, "denied"))
            elif approve_compliant:
                self.approve(summary.id)
                done.append((summary, "approved"))
            else:
                done.append((summary, "left pending (compliant)"))
        return done
