"""Submit a plan to a domain, wait for the admin's decision, run it and fetch the result.

    sub = submit_plan(client, train_xray_plan, inputs=split_assets(client, "xray", "train"),
                      constants={"config": plan.config(), "initial_weights": {}},
                      reason="3 epochs of a small CNN")
    wait_for_approval(client, sub, timeout=600)
    result = run_approved(client, sub)       # plain dict: weights, history, ...
"""

from __future__ import annotations

import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from common import syft_compat
from common.errors import DomainError
from common.syft_compat import muted
from common.syft_requests import get_request
from common.syft_requests import request_status as syft_request_status

DEFAULT_TIMEOUT_SECONDS = 900


@dataclass
class Submission:
    """A submitted plan: the syft request id, the function name, its asset inputs, its code id."""

    request_id: str
    func_name: str
    inputs: dict = field(default_factory=dict)
    code_id: str = ""


def find_dataset(client: Any, name: str) -> Any:
    """The dataset called `name`, or a clear error listing what exists."""
    datasets = client.datasets.get_all()
    for dataset in datasets:
        if dataset.name == name:
            return dataset
    known = ", ".join(d.name for d in datasets) or "none"
    raise DomainError(f"no dataset {name!r} on {client.name}; datasets: {known}")


def split_assets(client: Any, dataset: str, split: str) -> dict:
    """The images and labels assets of a split ('train' or 'test') of a dataset."""
    if split not in ("train", "test"):
        raise DomainError(f"unknown split {split!r}; use 'train' or 'test'")
    found = find_dataset(client, dataset)
    return {"images": found.assets[f"{split}_images"], "labels": found.assets[f"{split}_labels"]}


def _unwrap(result: Any, what: str) -> Any:
    if syft_compat.is_syft_error(result):
        raise DomainError(f"{what}: {syft_compat.error_text(result)}")
    return result


def submit_plan(client: Any, plan: Callable, *, inputs: dict, constants: dict,
                reason: str, name: str | None = None) -> Submission:
    """Submit `plan` with asset `inputs` and `constants` for the admin's approval."""
    import syft as sy

    if not reason or not reason.strip():
        raise DomainError("say why: a submission needs a reason for the hospital admin")
    for key, value in constants.items():  # what syft 0.9.5 passes into a run as is
        if not isinstance(value, (dict, str, int, float)):
            raise DomainError(f"constant {key!r} is a {type(value).__name__}; syft passes only "
                              "dict, str, int and float constants (wrap lists in a dict)")
    func_name = name or f"{plan.__name__}_{secrets.token_hex(4)}"
    rules = {k: sy.Constant(val=v) for k, v in constants.items()}
    with muted():
        syft_function = sy.syft_function(
            input_policy=sy.MixedInputPolicy(client=client, **inputs, **rules),
            output_policy=sy.SingleExecutionExactOutput(), name=func_name)(plan)
        try:
            request = client.code.request_code_execution(syft_function, reason=reason)
        except Exception as exc:
            raise DomainError(f"submission refused: {syft_compat.error_text(exc)}") from None
    request = _unwrap(request, "submission refused")
    return Submission(request_id=str(request.id.no_dash), func_name=func_name, inputs=inputs,
                      code_id=str(request.code_id.no_dash))


def upload_input(client: Any, value: Any) -> Any:
    """Send `value` to the domain as this account's own object; pass the returned
    pointer in a plan's `inputs`. Code rules treat it like private data (it is not a
    constant the admin can read in the request).

    Large inputs travel this way: syft keeps a submission's constants inside its code
    object and re-reads that at every step (submit, review, approve, run), so three
    sealed shares of 0.8 MB as constants cost 1.4 s against 1.0 s as an object, and at
    24 MB 12 s against 4 s.
    """
    import syft as sy

    with muted():
        try:
            pointer = sy.ActionObject.from_obj(value).send(client)
        except Exception as exc:
            raise DomainError(f"upload refused: {syft_compat.error_text(exc)}") from None
    return _unwrap(pointer, "upload refused")


def request_status(client: Any, submission: Submission) -> tuple[str, str]:
    """('pending'|'approved'|'rejected', denial reason) of a submission."""
    with muted():
        request = get_request(client, submission.request_id)
        status = syft_request_status(request)
        reason = str(request.deny_reason or "") if status == "rejected" else ""
    return status, reason


def wait_for_approval(client: Any, submission: Submission, *, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                      poll_seconds: float = 1.0, progress: bool = True) -> None:
    """Block until the admin approves; raise on denial or timeout. Shows a spinner."""
    started = time.monotonic()
    spinner = "|/-\\"
    tick = 0
    while True:
        status, reason = request_status(client, submission)
        if status == "approved":
            if progress:
                print(f"\rrequest {submission.request_id[:8]} approved after "
                      f"{time.monotonic() - started:.0f} s          ", file=sys.stderr)
            return
        if status == "rejected":
            raise DomainError(f"request {submission.request_id} was denied: {reason}")
        waited = time.monotonic() - started
        if waited > timeout:
            raise DomainError(f"request {submission.request_id} still pending after "
                              f"{timeout:.0f} s; ask the hospital admin to review it")
        if progress:
            print(f"\r{spinner[tick % 4]} waiting for the admin to review request "
                  f"{submission.request_id[:8]} ({waited:.0f} s)", end="", file=sys.stderr)
        tick += 1
        time.sleep(poll_seconds)


def run_approved(client: Any, submission: Submission) -> Any:
    """Run the approved plan on the private data inside the domain; fetch its output.

    The call goes straight to ``code.call`` with the code's id: looking the function
    up as ``client.code.<name>`` makes syft re-download its whole API, which holds
    every plan this account ever submitted, and grew slower with every round.
    """
    with muted():
        code_id = submission.code_id or str(get_request(client, submission.request_id).code_id)
        try:
            pointer = client.api.services.code.call(uid=syft_compat.to_uid(code_id),
                                                     **submission.inputs)
            result = pointer.get() if hasattr(pointer, "get") else pointer
        except Exception as exc:
            raise DomainError(f"running {submission.func_name} failed: "
                              f"{syft_compat.error_text(exc)}") from None
    return _unwrap(result, f"running {submission.func_name} failed")
