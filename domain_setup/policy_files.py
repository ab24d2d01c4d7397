"""Strict loading of the policy YAML files, with `file:line: reason` errors.

`load_policy(path, schema)` parses with a PyYAML SafeLoader subclass, keeps the
composed node tree (every node knows its start line) and converts it against a
tiny declarative schema (`Struct`, `ListOf`, `DictOf`, `Scalar`). Everything a
person can get wrong is a `PolicyError` naming the file and line: syntax errors,
unknown keys (typos), wrong types, missing keys, duplicate keys (PyYAML would keep
the last one silently), aliases, merge keys and custom tags.

The three policy files have typed loaders: `load_accounts`, `load_permissions`
and `load_approval_rules`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import yaml

from common.errors import PolicyError
from common.training_config import policy_limited_parameters
from domain_setup.roles import ROLES

# ---------------------------------------------------------------------------
# Vocabulary of the policy files
# ---------------------------------------------------------------------------

ACTIONS: tuple[str, ...] = (
    "list_datasets", "read_mock", "read_private", "upload_dataset", "manage_accounts",
    "change_settings", "submit_code", "approve_requests", "read_others_requests",
    "issue_tokens", "revoke_tokens", "read_audit",
)
ANY_DATASET = "*"

_BLOCKED_TLDS = frozenset({"local", "localhost", "internal", "localdomain", "lan", "home",
                           "test", "invalid", "example"})
_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@((?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
                       r"([A-Za-z]{2,}))$")
_DOTTED_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---------------------------------------------------------------------------
# Schema description
# ---------------------------------------------------------------------------

Check = Callable[[Any], Union[str, None]]  # returns a reason, or None when fine


@dataclass(frozen=True)
class Scalar:
    """A string, integer, number (`float`, ints accepted) or boolean, plus a check."""

    kind: type
    check: Check | None = None


@dataclass(frozen=True)
class ListOf:
    """A YAML list; `unique` maps an item to the value that must not repeat."""

    item: "Schema"
    unique: Callable[[Any], Any] | None = None
    unique_what: str = "item"


@dataclass(frozen=True)
class DictOf:
    """A mapping with free keys (checked by `key`) and values of one schema."""

    value: "Schema"
    key: Scalar = Scalar(str)


@dataclass(frozen=True)
class Struct:
    """A mapping with a fixed set of keys; any other key is an error."""

    required: dict[str, "Schema"] = field(default_factory=dict)
    optional: dict[str, "Schema"] = field(default_factory=dict)
    check: Check | None = None  # on the converted dict, e.g. min <= max


Schema = Union[Scalar, ListOf, DictOf, Struct]

_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a mapping", type(None): "nothing (null)"}


def _kind_name(value_or_type: Any) -> str:
    kind = value_or_type if isinstance(value_or_type, type) else type(value_or_type)
    return _KIND_NAMES.get(kind, kind.__name__)


# ---------------------------------------------------------------------------
# Reusable checks
# ---------------------------------------------------------------------------

def email_problem(value: str) -> str | None:
    """Why `value` is not a usable account email (syft rejects .local and friends)."""
    match = _EMAIL_RE.match(value)
    if not match:
        return f"invalid email {value!r}: expected name@domain.tld"
    if match.group(2).lower() in _BLOCKED_TLDS:
        return f"invalid email {value!r}: .{match.group(2)} is not a real domain; use e.g. .org"
    return None


def choice(values: tuple[str, ...], what: str) -> Scalar:
    """A string that must be one of `values`."""
    def check(value: str) -> str | None:
        if value not in values:
            return f"unknown {what} {value!r} (known: {', '.join(values)})"
        return None
    return Scalar(str, check)


def _pattern(regex: re.Pattern, what: str) -> Scalar:
    return Scalar(str, lambda v: None if regex.match(v) else f"{v!r} is not a valid {what}")


def _non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _positive(value: int) -> str | None:
    return None if value >= 1 else f"must be at least 1, got {value}"


EMAIL = Scalar(str, email_problem)
TEXT = Scalar(str, _non_empty)
POSITIVE_INT = Scalar(int, _positive)
POSITIVE_NUMBER = Scalar(float, lambda v: None if v > 0 else f"must be above 0, got {v}")
DOTTED_NAME = _pattern(_DOTTED_RE, "dotted Python name")
IDENTIFIER = _pattern(_IDENT_RE, "Python identifier")


def names_list(item: Scalar = TEXT, what: str = "entry") -> ListOf:
    """A list of strings in which each may appear once."""
    return ListOf(item, unique=lambda v: v, unique_what=what)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (no billion laughs, no cycles)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                problem="aliases (*name) are not allowed in policy files",
                problem_mark=event.start_mark)
        return super().compose_node(parent, index)


_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_SCALAR_TAGS = frozenset("tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null"))


def display_path(path: str | Path) -> str:
    """`path` relative to the working directory when it lies below it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Converter:
    """Turns a composed node tree into plain Python values, checking a schema."""

    def __init__(self, loader: _StrictLoader, where: str):
        self.loader = loader
        self.where = where

    def fail(self, node: Any, reason: str) -> PolicyError:
        return PolicyError(f"{self.where}:{node.start_mark.line + 1}: {_one_line(reason)}")

    def convert(self, node: Any, schema: Schema) -> Any:
        if isinstance(schema, Scalar):
            return self._scalar(node, schema)
        if isinstance(schema, ListOf):
            return self._list(node, schema)
        pairs = self._pairs(node)
        if isinstance(schema, DictOf):
            return {self._scalar(k, schema.key): self.convert(v, schema.value)
                    for k, v in pairs}
        return self._struct(node, pairs, schema)

    def _struct(self, node: Any, pairs: list, schema: Struct) -> dict:
        known = {**schema.required, **schema.optional}
        result = {}
        for key_node, value_node in pairs:
            key = self._scalar(key_node, Scalar(str))
            if key not in known:
                raise self.fail(key_node, f"unknown key {key!r} (expected one of: "
                                          f"{', '.join(known)})")
            result[key] = self.convert(value_node, known[key])
        for key in schema.required:
            if key not in result:
                raise self.fail(node, f"missing required key {key!r}")
        reason = schema.check(result) if schema.check else None
        if reason:
            raise self.fail(node, reason)
        return result

    def _pairs(self, node: Any) -> list:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"expected a mapping, got {self._describe(node)}")
        if node.tag != _MAP_TAG:
            raise self.fail(node, f"unsupported YAML tag {node.tag}")
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self.fail(key_node, "merge keys (<<) are not allowed in policy files")
            key = self._scalar(key_node, None)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise self.fail(key_node, f"duplicate key {key!r} (first at line {seen[key]})")
            seen[key] = line
        return node.value

    def _list(self, node: Any, schema: ListOf) -> list:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"expected a list, got {self._describe(node)}")
        if node.tag != _SEQ_TAG:
            raise self.fail(node, f"unsupported YAML tag {node.tag}")
        items, seen = [], {}
        for item_node in node.value:
            item = self.convert(item_node, schema.item)
            if schema.unique is not None:
                marker = schema.unique(item)
                if marker in seen:
                    raise self.fail(item_node, f"duplicate {schema.unique_what} {marker!r} "
                                               f"(first at line {seen[marker]})")
                seen[marker] = item_node.start_mark.line + 1
            items.append(item)
        return items

    def _scalar(self, node: Any, schema: Scalar | None) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            expected = _kind_name(schema.kind) if schema else "a plain key"
            raise self.fail(node, f"expected {expected}, got {self._describe(node)}")
        if node.tag not in _SCALAR_TAGS:
            raise self.fail(node, f"unsupported YAML tag {node.tag}")
        value = self.loader.construct_object(node)
        if schema is None:
            return value
        if not _is_kind(value, schema.kind):
            hint = " (quote it)" if schema.kind is str and value is not None else ""
            raise self.fail(node, f"expected {_kind_name(schema.kind)}, got "
                                  f"{_kind_name(value)} ({node.value!r}){hint}")
        if schema.kind is float:
            value = float(value)
        reason = schema.check(value) if schema.check else None
        if reason:
            raise self.fail(node, reason)
        return value

    @staticmethod
    def _describe(node: Any) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        return f"the value {node.value!r}" if node.value else "nothing (null)"


def _is_kind(value: Any, kind: type) -> bool:
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def load_policy(path: str | Path, schema: Struct) -> dict:
    """Parse the YAML file at `path` and check it against `schema` (a `Struct`)."""
    where = display_path(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"{where}: policy file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError(f"{where}: cannot read policy file: {_one_line(reason)}") from None
    loader = _StrictLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            if exc.context_mark and (mark is None or mark.index >= len(text)):
                mark = exc.context_mark  # "unexpected end": point at what was left open
            line = mark.line + 1 if mark else 1
            detail = ", ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
            raise PolicyError(f"{where}:{line}: YAML syntax error: {_one_line(detail)}") from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"{where}:1: YAML syntax error: {_one_line(exc)}") from None
        if root is None:
            raise PolicyError(f"{where}:1: the file is empty; expected a mapping")
        converter = _Converter(loader, where)
        if not isinstance(root, yaml.MappingNode):
            raise converter.fail(root, "expected a mapping at the top level, got "
                                       + converter._describe(root))
        return converter.convert(root, schema)
    finally:
        loader.dispose()


# ---------------------------------------------------------------------------
# accounts.yaml
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Account:
    """One person with an account on the domain (no password: see accounts.py)."""

    email: str
    name: str
    role: str
    institution: str | None = None
    groups: tuple[str, ...] = ()


ACCOUNTS_SCHEMA = Struct(required={
    "accounts": ListOf(
        Struct(required={"name": TEXT, "email": EMAIL, "role": choice(ROLES, "role")},
               optional={"institution": TEXT, "groups": names_list(what="group")}),
        unique=lambda account: account["email"].lower(), unique_what="email"),
})


def load_accounts(path: str | Path) -> list[Account]:
    """The accounts of accounts.yaml, in file order."""
    data = load_policy(path, ACCOUNTS_SCHEMA)
    return [Account(email=a["email"], name=a["name"], role=a["role"],
                    institution=a.get("institution"), groups=tuple(a.get("groups", ())))
            for a in data["accounts"]]


# ---------------------------------------------------------------------------
# permissions.yaml
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetAccess:
    """Who may use one dataset (or every dataset, for the "*" entry)."""

    users: frozenset[str] = frozenset()   # lower-cased emails
    groups: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()

    def matches(self, email: str, groups: tuple[str, ...] | list[str], role: str) -> bool:
        """Does this rule list the user, one of their groups or their role?"""
        return (email.lower() in self.users or role in self.roles
                or any(group in self.groups for group in groups))

    @classmethod
    def of(cls, rule: dict) -> "DatasetAccess":
        """From a converted ``users/groups/roles`` mapping of a policy file."""
        return cls(users=frozenset(u.lower() for u in rule.get("users", ())),
                   groups=frozenset(rule.get("groups", ())),
                   roles=frozenset(rule.get("roles", ())))


@dataclass(frozen=True)
class PermissionRules:
    """The content of permissions.yaml."""

    roles: dict[str, frozenset[str]]
    datasets: dict[str, DatasetAccess]
    allow_signup: bool = False
    syft_paths: dict[str, frozenset[str]] = field(default_factory=dict)  # "*": every path


_ACTION_LIST = names_list(choice(ACTIONS, "action"), what="action")
# who a rule is for: the users, groups and roles of a dataset rule (and of a privacy budget)
WHO_SCHEMA = {"users": ListOf(EMAIL, unique=str.lower, unique_what="user"),
              "groups": names_list(what="group"),
              "roles": names_list(choice(ROLES, "role"), what="role")}
ANY_SYFT_PATH = "*"
_SYFT_PATH_LIST = names_list(Scalar(str, lambda v: None if v == ANY_SYFT_PATH or _DOTTED_RE.match(v)
                                    else f"{v!r} is not a syft service path"), what="path")
PERMISSIONS_SCHEMA = Struct(
    required={"roles": Struct(required={role: _ACTION_LIST for role in ROLES}),
              "datasets": DictOf(Struct(optional=WHO_SCHEMA), key=TEXT),
              "syft_paths": Struct(required={role: _SYFT_PATH_LIST for role in ROLES})},
    optional={"allow_signup": Scalar(bool)},
)


def load_permissions(path: str | Path) -> PermissionRules:
    """The role actions and dataset access rules of permissions.yaml."""
    data = load_policy(path, PERMISSIONS_SCHEMA)
    datasets = {name: DatasetAccess.of(rule) for name, rule in data["datasets"].items()}
    return PermissionRules(roles={r: frozenset(a) for r, a in data["roles"].items()},
                           datasets=datasets, allow_signup=data.get("allow_signup", False),
                           syft_paths={r: frozenset(p) for r, p in data["syft_paths"].items()})


# ---------------------------------------------------------------------------
# approval.yaml
# ---------------------------------------------------------------------------

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
    )
