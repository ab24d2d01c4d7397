"""The verdict on a code request, the same for the admin's review and for the domain.

A request is one of three kinds:

* ``vetted``: a plan kind of the registry (`domain_setup.vetting.registry`) with
  constants that fit its schema and the approval limits, binding whole assets of the
  right split. It may be approved without an override (``review auto
  --approve-compliant`` does).
* ``custom``: any other code. It always needs an admin's override with a reason;
  the advisory linter's findings (`domain_setup.vetting.linter`) come along as notes.
* ``violating``: a vetted plan with bad constants or inputs, a secure round with a
  party that is not a member of the federation, a release the privacy rules forbid,
  or code that launches other syft functions. It too needs an override and a reason.

The domain computes the same verdict when any client approves (`server/approval_guard`),
so the CLI, a stock syft client and a web page are bound alike.

    verdict = judge(source, inputs={"images": "xray/train_images", ...},
                    constants={"config": {...}, "initial_weights": {}}, rules=rules)
    verdict.kind, verdict.needs_override, verdict.headline
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import Any

from common import syft_compat
from domain_setup.policy.approval import ApprovalRules
from domain_setup.vetting.constants import constant_problems
from domain_setup.vetting.linter import check_code, check_config
from domain_setup.vetting.registry import CUSTOM, code_sha256, identify, input_problems

CUSTOM_CODE = "custom code: needs an admin's review"
NESTED_CODE = "calls other syft functions (nested code), which the rules do not check"


@dataclass
class Verdict:
    """What the domain thinks of a request's code, with every reason."""

    kind: str  # "vetted", "custom" or "violating"
    plan: str | None
    code_sha256: str
    reasons: list[str] = field(default_factory=list)  # what blocks approval
    notes: list[str] = field(default_factory=list)  # the linter's findings on custom code

    @property
    def needs_override(self) -> bool:
        return self.kind != "vetted"

    @property
    def headline(self) -> str:
        if self.kind == "vetted":
            return f"vetted plan {self.plan!r}: complies with the approval rules"
        if self.kind == "custom":
            return CUSTOM_CODE
        what = f"plan {self.plan!r}" if self.plan else "code"
        return f"{what} VIOLATES the approval rules"

    def all_reasons(self) -> list[str]:
        """Every reason and note, one per line, for the admin."""
        lead = [CUSTOM_CODE] if self.kind == "custom" else []
        return lead + self.reasons + [f"linter: {note}" for note in self.notes]


def asset_names_of(datasets: Any) -> dict[str, str]:
    """{asset action id: "dataset/asset"} of syft datasets (read by a client or a server)."""
    return {str(asset.action_id): f"{dataset.name}/{asset.name}"
            for dataset in datasets for asset in dataset.asset_list}


def code_bindings(code: Any, asset_names: dict[str, str]) -> tuple[dict, dict]:
    """(inputs, constants) of a syft UserCode: inputs as "dataset/asset" names (or
    "object ID" for an object that is no dataset's asset), constants as values."""
    inputs, constants = {}, {}
    for kwarg, rule in syft_compat.input_policy_rules(code).items():
        value = syft_compat.rule_value(rule)
        if syft_compat.is_constant(rule):
            constants[kwarg] = value
        else:
            inputs[kwarg] = asset_names.get(str(value), f"object {value}")
    return inputs, constants


def judge_code(code: Any, inputs: dict[str, str], constants: dict,
               rules: ApprovalRules, domain_problems: list[str] | tuple = ()) -> Verdict:
    """The verdict on a syft UserCode with its `code_bindings` (what the review and the
    domain's guard both call); `domain_problems` are those of the domain's quote
    (`server/request_quote`): over budget, over the per-request ε, DP required, a round
    party that is not a member."""
    verdict = judge(code.raw_code, inputs=inputs, constants=constants, rules=rules,
                    nested=bool(syft_compat.nested_codes(code)))
    problems = syft_compat.policy_problems(code) + list(domain_problems)
    if problems:
        verdict.kind, verdict.reasons = "violating", verdict.reasons + problems
    return verdict


def judge(source: str, *, inputs: dict[str, str], constants: dict, rules: ApprovalRules,
          nested: bool = False) -> Verdict:
    """The verdict on `source` with its inputs ({kwarg: "dataset/asset" or "object ID"})
    and constants, under `rules`."""
    kind = identify(source)
    reasons = [NESTED_CODE] if nested else []
    config = constants.get(rules.config_parameter)
    if isinstance(config, dict):
        reasons += check_config(config, rules)
    if kind.name != CUSTOM:
        reasons += input_problems(kind, inputs) + constant_problems(kind, constants)
        return Verdict("violating" if reasons else "vetted", kind.name, code_sha256(source),
                       reasons)
    lint = check_code(source, rules, input_shapes={k: () for k in inputs})
    return Verdict("violating" if reasons else "custom", None, code_sha256(source), reasons,
                   list(lint.reasons))
