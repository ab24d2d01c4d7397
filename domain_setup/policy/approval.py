"""``approval.yaml``: what submitted code may contain and return, and the sandbox's limits.

The static rules (imports, forbidden names, returns) drive the advisory linter for
custom code (`domain_setup.vetting.linter`); `limits:` bounds the training config of
every plan; `sandbox:` limits every run; `releases:` bounds vetted and custom releases;
`review:` says whether the domain approves compliant vetted plans by itself.

    rules = load_approval_rules("policies/approval.yaml")
    rules.max_epochs, sandbox_limits(rules, {}).timeout_seconds        # 20, 600.0
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.training_config import policy_limited_parameters
from domain_setup.policy.schema import (DOTTED_NAME, IDENTIFIER, POSITIVE_INT, POSITIVE_NUMBER,
                                        Scalar, Struct, load_policy, names_list)


@dataclass(frozen=True)
class ApprovalRules:
    """The content of approval.yaml: what submitted code may contain and return."""

    allowed_imports: tuple[str, ...]
    forbidden_builtins: frozenset[str]
    forbidden_modules: frozenset[str]
    forbidden_apis: tuple[str, ...]
    forbidden_attributes: frozenset[str]
    limits: dict  # approval.yaml's limits on training parameters (common.training_config)
    config_parameter: str
    allowed_return_keys: frozenset[str]
    public_inputs: frozenset[str]
    vetted_calls: frozenset[str]
    declassifying_calls: frozenset[str]
    data_arguments: int
    safe_calls: frozenset[str]
    safe_attributes: frozenset[str]
    sandbox: dict  # limits of every run of submitted code (domain_setup.sandbox.SandboxLimits)
    min_samples: int  # images a vetted train or evaluate release covers at least
    custom_max_result_bytes: int  # what custom code may return, encoded
    approve_compliant: bool = False  # the domain approves compliant vetted plans itself

    @property
    def max_epochs(self) -> int:
        return self.limits["max_epochs"]

    @property
    def allowed_models(self) -> tuple[str, ...]:
        return tuple(self.limits["models"])


def _limits_schema() -> dict:
    """The ``limits:`` keys, one per policy limit of the training config."""
    schema: dict = {}
    for parameter in policy_limited_parameters():
        for name in (parameter.policy_max, parameter.policy_min):
            if name:
                schema[name] = POSITIVE_INT
        if parameter.policy_choices:
            schema[parameter.policy_choices] = names_list(IDENTIFIER, what=parameter.name)
    return schema


def _min_above_max_problem(limits: dict) -> str | None:
    for parameter in policy_limited_parameters():
        low, high = parameter.policy_min, parameter.policy_max
        if low and high and limits[low] > limits[high]:
            return f"{low} {limits[low]} is above {high} {limits[high]}"
    return None


SANDBOX_LIMIT_KEYS = ("timeout_seconds", "memory_mb", "cpu_seconds", "max_file_mb",
                      "max_processes", "max_open_files", "tmpfs_mb", "max_output_mb",
                      "max_log_kb")  # the fields of domain_setup.sandbox.SandboxLimits
DEFAULT_MIN_SAMPLES = 20
DEFAULT_CUSTOM_MAX_RESULT_KB = 1024
_DOTTED_LIST = names_list(DOTTED_NAME, what="name")
_IDENT_LIST = names_list(IDENTIFIER, what="name")
APPROVAL_SCHEMA = Struct(required={
    "imports": Struct(required={"allowed": _DOTTED_LIST}),
    "forbidden": Struct(required={"builtins": _IDENT_LIST, "modules": _IDENT_LIST,
                                  "apis": _DOTTED_LIST, "attributes": _IDENT_LIST}),
    "limits": Struct(required={**_limits_schema(), "config_parameter": IDENTIFIER},
                     check=_min_above_max_problem),
    "returns": Struct(required={"allowed_keys": _IDENT_LIST, "public_inputs": _IDENT_LIST,
                                "vetted_calls": _DOTTED_LIST,
                                "declassifying_calls": _DOTTED_LIST,
                                "data_arguments": POSITIVE_INT},
                      optional={"safe_calls": _IDENT_LIST, "safe_attributes": _IDENT_LIST}),
}, optional={
    "sandbox": Struct(optional={key: POSITIVE_NUMBER if key == "timeout_seconds" else POSITIVE_INT
                                for key in SANDBOX_LIMIT_KEYS}),
    "releases": Struct(optional={"min_samples": POSITIVE_INT,
                                 "custom_max_result_kb": POSITIVE_INT}),
    "review": Struct(optional={"approve_compliant": Scalar(bool)}),
})


def load_approval_rules(path: str | Path) -> ApprovalRules:
    """The static-analysis rules of approval.yaml."""
    data = load_policy(path, APPROVAL_SCHEMA)
    forbidden, limits, returns = data["forbidden"], data["limits"], data["returns"]
    return ApprovalRules(
        allowed_imports=tuple(data["imports"]["allowed"]),
        forbidden_builtins=frozenset(forbidden["builtins"]),
        forbidden_modules=frozenset(forbidden["modules"]),
        forbidden_apis=tuple(forbidden["apis"]),
        forbidden_attributes=frozenset(forbidden["attributes"]),
        limits={k: (tuple(v) if isinstance(v, list) else v) for k, v in limits.items()
                if k != "config_parameter"},
        config_parameter=limits["config_parameter"],
        allowed_return_keys=frozenset(returns["allowed_keys"]),
        public_inputs=frozenset(returns["public_inputs"]),
        vetted_calls=frozenset(returns["vetted_calls"]) | frozenset(returns["declassifying_calls"]),
        declassifying_calls=frozenset(returns["declassifying_calls"]),
        data_arguments=returns["data_arguments"],
        safe_calls=frozenset(returns.get("safe_calls", ())),
        safe_attributes=frozenset(returns.get("safe_attributes", ())),
        sandbox=dict(data.get("sandbox", {})),
        min_samples=data.get("releases", {}).get("min_samples", DEFAULT_MIN_SAMPLES),
        custom_max_result_bytes=1024 * data.get("releases", {}).get(
            "custom_max_result_kb", DEFAULT_CUSTOM_MAX_RESULT_KB),
        approve_compliant=data.get("review", {}).get("approve_compliant", False),
    )


def sandbox_limits(approval: ApprovalRules, config_extra: dict) -> Any:
    """The limits of every sandboxed run: approval.yaml's ``sandbox:`` section, then this
    domain's `start --plan-timeout SECONDS --plan-memory-mb MB` on top."""
    from domain_setup.sandbox import SandboxLimits

    values = dict(approval.sandbox)
    if config_extra.get("plan_timeout_seconds"):
        values["timeout_seconds"] = float(config_extra["plan_timeout_seconds"])
    if config_extra.get("plan_memory_mb"):
        values["memory_mb"] = int(config_extra["plan_memory_mb"])
    return SandboxLimits.from_mapping(values)
