"""The verdict binds every client: the domain refuses an approval that needs an override
and lacks one, whoever sends it (the CLI, a stock syft client, a web page).

An admin or data owner registers an override for one request with a reason
(``POST /pneumosyft/requests/{id}/override``, what ``review approve --override
--reason`` does); it is good for that request's next approval within ten minutes.
syft's ``Request.apply`` is wrapped: it computes the verdict on the server with
the policy snapshot in force and the domain's quote (privacy, the round's parties),
refuses custom or violating code without an override (audited as ``request.approve``
refused), audits every approval with the code's hash (``request.approve``, or
``request.override`` with the reason), and records it in the approval ledger, which
the dispatch reads when the code runs (an override is the admin's explicit trust).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from common import syft_compat
from common.syft_compat import requires
from domain_setup.server.request_quote import quote_request
from domain_setup.vetting.verdicts import asset_names_of, code_bindings, judge_code

log = logging.getLogger("pneumosyft.approval")
OVERRIDE_TTL_SECONDS = 600
_REQUEST = "syft.service.request.request:Request"


@dataclass(frozen=True)
class Override:
    """An admin's permission to approve one request despite its verdict."""

    request_id: str
    approver: str
    reason: str
    expires: float


class Overrides:
    """Pending overrides by request id (in memory: a restart asks for them again)."""

    def __init__(self) -> None:
        self._by_request: dict[str, Override] = {}
        self._lock = threading.Lock()

    def register(self, request_id: str, approver: str, reason: str) -> Override:
        override = Override(request_id, approver, reason, time.time() + OVERRIDE_TTL_SECONDS)
        with self._lock:
            self._by_request[request_id] = override
        return override

    def take(self, request_id: str) -> Override | None:
        """The request's live override, used up by this call."""
        with self._lock:
            override = self._by_request.pop(request_id, None)
        return override if override and override.expires > time.time() else None


_STATUS_CHANGE = "syft.service.request.request:UserCodeStatusChange"


@requires(f"{_REQUEST}.apply", f"{_REQUEST}.undo", f"{_REQUEST}.get_user_code", _STATUS_CHANGE,
          "syft.types.errors:SyftException")
def bind_verdicts(worker: Any, policies: Any, overrides: Overrides, audit: Any,
                  ledger: Any, approvals: Any, own_key: Any, pending: Any) -> None:
    """Wrap syft's Request.apply so that every approval passes the verdict, and refuse to
    apply or undo (deny) a request that is more than one code-status change (idempotent).
    `approvals` is the `ApprovalLedger`; `own_key()` this hospital's aggregation public
    key (None before `federation enable`); `pending` the `PendingRequests` index, which
    submissions, approvals and denials keep."""
    request_type = syft_compat.resolve(_REQUEST)
    original = request_type.apply
    if getattr(original, "binds_verdicts", False):
        return
    original_undo = request_type.undo
    syft_exception = syft_compat.resolve("syft.types.errors:SyftException")
    status_change = syft_compat.resolve(_STATUS_CHANGE)

    def refuse_bundles(request: Any) -> None:
        # a request may carry any syft change (object mutations, permissions on assets, peers);
        # applying or undoing one would write what the requester chose, with admin rights
        changes = list(request.changes or [])
        if len(changes) != 1 or not isinstance(changes[0], status_change):
            raise syft_exception(public_message=(
                f"request {request.id.no_dash} holds {len(changes)} change(s) of kinds "
                f"{', '.join(sorted({type(c).__name__ for c in changes})) or 'none'}; this "
                "domain applies only requests of one code-status change"))

    def undo(self: Any, context: Any) -> Any:
        refuse_bundles(self)
        result = original_undo(self, context)
        pending.discard(str(self.id.no_dash))
        return result

    def judge(request: Any, context: Any) -> tuple[Any, Any, dict, list[str]]:
        """(code, verdict, audit details, foreign inputs) of a request, computed here with
        the policy snapshot in force and the domain's quote."""
        code = request.get_user_code(context).unwrap()
        datasets = syft_compat.all_datasets(worker)
        inputs, constants = code_bindings(code, asset_names_of(datasets))
        quote = quote_request(worker, policies.current, ledger, code, own_key=own_key(),
                              datasets=datasets)
        verdict = judge_code(code, inputs, constants, policies.current.approval,
                             domain_problems=quote["problems"])
        details = {"requester": request.requesting_user_email or "?",
                   "function": code.service_func_name, "plan": verdict.plan or "custom",
                   "code_sha256": verdict.code_sha256}
        return code, verdict, details, foreign_inputs(worker, code, inputs)

    def apply(self: Any, context: Any) -> Any:
        refuse_bundles(self)
        request_id = str(self.id.no_dash)
        judged = getattr(_acting, "judged", None)  # (id, judgement) the domain just made
        automatic = judged is not None and judged[0] == request_id
        code, verdict, details, foreign = judged[1] if automatic else judge(self, context)
        approver = AUTOMATIC_APPROVER if automatic else syft_compat.email_of(
            worker, context.credentials)
        override = overrides.take(request_id) if verdict.needs_override else None
        refused = approval_refusal(verdict, override, foreign,
                                   request_id=request_id, requester=details["requester"])
        if refused is not None:
            audit_reason, public_message = refused
            audit.record(approver, "request.approve", target=request_id, outcome="refused",
                         reason=audit_reason, **details)
            raise syft_exception(public_message=public_message)
        # recorded first: the researcher may run the code the moment syft has applied it
        approvals.record(str(code.id.no_dash), request_id, approver=approver,
                         override_reason=override.reason if override is not None else "")
        result = original(self, context)
        pending.discard(request_id)
        if override is not None:
            audit.record(approver, "request.override", target=request_id, reason=override.reason,
                         violations="; ".join(verdict.all_reasons()), **details)
        else:
            audit.record(approver, "request.approve", target=request_id, **details)
        return result

    def compliant(request: Any, context: Any) -> tuple | None:
        """The judgement of a request the domain would approve without an override (a vetted
        plan whose verdict complies, inputs of the requester's own); None otherwise."""
        try:
            refuse_bundles(request)
        except syft_exception:
            return None
        judgement = judge(request, context)
        _, verdict, _, foreign = judgement
        refused = approval_refusal(verdict, None, foreign, request_id="", requester="")
        return judgement if refused is None else None

    apply.binds_verdicts = True  # type: ignore[attr-defined]
    request_type.apply = apply
    request_type.undo = undo
    track_submissions(worker, policies, compliant, pending)


AUTOMATIC_APPROVER = "domain (approve_compliant)"
_acting = threading.local()  # .judged: (request id, judgement) while the domain approves one
_SUBMIT = "syft.service.request.request_service:RequestService.submit"


@requires(_SUBMIT, "syft.service.context:AuthedServiceContext")
def track_submissions(worker: Any, policies: Any, compliant: Callable[[Any, Any], tuple | None],
                      pending: Any) -> None:
    """Every submitted request enters the `pending` index. With approval.yaml's ``review:
    approve_compliant: true``, the domain approves a vetted plan whose verdict complies
    the moment it is submitted: through syft's own
    ``request.apply`` and the wrapped ``Request.apply`` above (the same verdict, approval
    ledger and audit), as ``domain (approve_compliant)``. Custom code, violations and
    requests that need an override stay pending for an admin, as does a request whose
    automatic approval fails (the failure is in the domain log)."""
    service_type = syft_compat.resolve(_SUBMIT.rsplit(".", 1)[0])
    original = service_type.submit
    if getattr(original, "approves_compliant", False):
        return
    context_type = syft_compat.resolve("syft.service.context:AuthedServiceContext")

    def submit(self: Any, *args: Any, **kwargs: Any) -> Any:
        request = original(self, *args, **kwargs)
        if not syft_compat.is_request(request):
            return request
        pending.add(str(request.id.no_dash))
        if policies.current.approval.approve_compliant:
            context = context_type(server=worker, credentials=worker.verify_key,
                                   role=syft_compat.service_role("admin"))
            try:
                judgement = compliant(request, context)
                if judgement is not None:  # judged once: the wrapped apply reuses it
                    _acting.judged = (str(request.id.no_dash), judgement)
                    worker.services.request.apply(context, uid=request.id)
            except Exception:  # noqa: BLE001 - it waits for an admin instead
                log.exception("automatic approval of request %s failed; it stays pending",
                              request.id)
            finally:
                _acting.judged = None
        return request

    submit.approves_compliant = True  # type: ignore[attr-defined]
    service_type.submit = submit


def approval_refusal(verdict: Any, override: Override | None, foreign: list[str], *,
                     request_id: str, requester: str) -> tuple[str, str] | None:
    """(audit reason, the approver's one line) when the approval must be refused: inputs
    that are another account's objects (never, not even with an override), or a verdict
    that needs an override and has none; None when the approval may go ahead."""
    if foreign:
        return (f"inputs of another account: {', '.join(foreign)}",
                f"request {request_id}: input(s) {', '.join(foreign)} are objects that "
                f"{requester} cannot read; syft would run them with the domain's rights, so "
                "no approval, not even an override, applies them")
    if verdict.needs_override and override is None:
        return (verdict.headline,
                f"request {request_id}: {verdict.headline}; the domain approves it only with "
                f"an override and a reason: python -m domain_setup review approve "
                f"{request_id} --override --reason TEXT")
    return None


def foreign_inputs(worker: Any, code: Any, inputs: dict[str, str]) -> list[str]:
    """The kwargs of `code` bound to an object (not a dataset's asset) that its submitter
    may not read: another researcher's upload or result."""
    return sorted(kwarg for kwarg, bound in inputs.items()
                  if bound.startswith("object ") and not syft_compat.can_read_object(
                      worker, bound.split(" ", 1)[1], code.user_verify_key))
