"""The schema engine of the policy files: strict YAML with `file:line: reason` errors.

`load_policy(path, schema)` parses with a PyYAML SafeLoader subclass, keeps the
composed node tree (every node knows its start line) and converts it against a
tiny declarative schema (`Struct`, `ListOf`, `DictOf`, `Scalar`). Everything a
person can get wrong is a `PolicyError` naming the file and line: syntax errors,
unknown keys (typos), wrong types, missing keys, duplicate keys (PyYAML would keep
the last one silently), aliases, merge keys and custom tags.

Each policy file has its own module beside this one (`accounts`, `permissions`,
`approval`, `privacy`), which declares its schema with these parts.

    data = load_policy("policies/accounts.yaml", ACCOUNTS_SCHEMA)
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
from domain_setup.policy.roles import ROLES

_BLOCKED_TLDS = frozenset({"local", "localhost", "internal", "localdomain", "lan", "home",
                           "test", "invalid", "example"})
_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@((?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
                       r"([A-Za-z]{2,}))$")
DOTTED_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
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
DOTTED_NAME = _pattern(DOTTED_RE, "dotted Python name")
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
# Who a rule is for (permissions.yaml's dataset rules, privacy.yaml's budgets)
# ---------------------------------------------------------------------------

WHO_SCHEMA = {"users": ListOf(EMAIL, unique=str.lower, unique_what="user"),
              "groups": names_list(what="group"),
              "roles": names_list(choice(ROLES, "role"), what="role")}


@dataclass(frozen=True)
class DatasetAccess:
    """Who a rule is for: users (by email), groups and roles."""

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
