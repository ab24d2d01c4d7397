"""The registry of plan kinds: every kind of code a domain runs, declared in one object.

A `PlanKind` says what its function is (a vetted plan of `common.vetted_plans`,
recognised by the identity of its source), which assets its inputs must bind, its
constants, its output contract, its privacy mechanism, whether it takes part in a
secure round, and for **every field it releases, what bounds it**:

* ``public``: known before the run (a count the asset's shape gives, the ε asked);
* ``dp``: covered by the privacy charge of the run (noisy, accounted);
* ``trusted``: released only where the admin trusts the researcher: the dataset's
  ``require_dp`` is false, or the admin approved this request with an override.

A field without a declaration is never released: `PlanKind.release` withholds the
whole result (fail closed). Each kind is one module of ``domain_setup/vetting/kinds/``
that calls `register`; the package imports every module in it, so adding a plan kind
touches its function in ``common/vetted_plans.py`` and its own file there.

    kind = identify(source)                 # the PlanKind of a submitted source (custom code
    kind.name, kind.mechanism.name          # when it is none of the catalogue's): "train", "none"
    released = kind.release(result, trusted=True)
"""

from __future__ import annotations

import ast
import enum
import hashlib
import inspect
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from domain_setup.vetting.contract_parts import ContractContext
from domain_setup.vetting.mechanisms import NO_MECHANISM, PrivacyMechanism

CUSTOM = "custom"
AGGREGATION_KEY_ASSET = "aggregation/x25519_private"


class Bound(str, enum.Enum):
    """What bounds a released value (see the module docstring)."""

    PUBLIC = "public"
    DP = "dp"
    TRUSTED = "trusted"


@dataclass(frozen=True)
class Released:
    """One field a plan kind releases, what bounds it, and why, in one line."""

    field: str
    bound: Bound
    what: str


class ReleaseRefused(Exception):
    """A result holding a field its kind does not declare, or a trusted field where the
    admin does not trust the researcher: nothing of it leaves (the admin reads why)."""


@dataclass(frozen=True)
class PlanKind:
    """One kind of code the domain runs (see the module docstring)."""

    name: str
    function: Callable | None            # the vetted plan; None for custom code
    inputs: Mapping[str, str]            # kwarg -> asset name in the dataset, or "dataset/asset"
    constants: tuple[str, ...]           # the researcher's constants (schemas: vetting.constants)
    contract: Callable[[Any, ContractContext], None]  # raises ContractViolation
    releases: tuple[Released, ...]       # every field that may leave, with its bound
    summary: str                         # one line for the admin
    mechanism: PrivacyMechanism = NO_MECHANISM
    secure: bool = False                 # trains and seals shares for a secure round
    job: bool = False                    # a federated job: approved once, run per round by
                                         # the job routes (server/job_routes.py), never by syft
    kept: tuple[str, ...] = ()           # result fields the domain takes out and keeps (a
                                         # SCAFFOLD client control): never released
    submitted: bool = True               # False: only the domain itself runs it (aggregate)
    whole_result: bool = False           # custom code: the return value is the field "result"
    extra_problems: Callable[[dict], list[str]] | None = field(default=None, repr=False)
    served_by: str = ""                  # approved once and served by routes (which: this
                                         # says), never run as one syft run

    @property
    def fingerprint(self) -> str:
        return fingerprint(inspect.getsource(self.function)) or "" if self.function else ""

    @property
    def private(self) -> bool:
        """Does a run charge the privacy ledger (a DP mechanism)?"""
        return self.mechanism.private

    def bound_of(self, name: str) -> Bound | None:
        return next((r.bound for r in self.releases if r.field == name), None)

    @property
    def needs_trust(self) -> bool:
        """Does any released field need the admin's trust (``trusted``)?"""
        return any(r.bound is Bound.TRUSTED for r in self.releases)

    def release(self, result: Any, *, trusted: bool) -> dict:
        """What leaves the domain of a checked (and, for DP, post-processed) result: exactly
        its declared fields. ReleaseRefused for an undeclared field (fail closed), or a
        ``trusted`` field when the researcher is not trusted."""
        fields = {"result": result} if self.whole_result else result
        if not isinstance(fields, dict):
            raise ReleaseRefused(f"a {self.name} result is {type(fields).__name__}, not fields")
        undeclared = sorted(str(name) for name in fields if self.bound_of(name) is None)
        if undeclared:
            raise ReleaseRefused(f"the {self.name} plan kind declares no bound for "
                                 f"{', '.join(undeclared)}: never released")
        needing_trust = sorted(n for n in fields if self.bound_of(n) is Bound.TRUSTED)
        if needing_trust and not trusted:
            raise ReleaseRefused(f"{', '.join(needing_trust)} of {self.name} would be released "
                                 "without a bound (trusted), and this dataset requires DP")
        return dict(fields)


PLAN_KINDS: dict[str, PlanKind] = {}
_BY_FINGERPRINT: dict[str, PlanKind] = {}


def register(kind: PlanKind) -> PlanKind:
    """Add `kind` to the registry (each kind module calls this once)."""
    if kind.name in PLAN_KINDS:
        raise ValueError(f"plan kind {kind.name!r} is registered twice")
    names = [r.field for r in kind.releases]
    if len(set(names)) != len(names):
        raise ValueError(f"plan kind {kind.name!r} declares a released field twice")
    if kind.function is not None:
        if kind.fingerprint in _BY_FINGERPRINT:
            raise ValueError(f"plan kinds {kind.name!r} and "
                             f"{_BY_FINGERPRINT[kind.fingerprint].name!r} share a function")
        _BY_FINGERPRINT[kind.fingerprint] = kind
    PLAN_KINDS[kind.name] = kind
    return kind


def all_kinds() -> dict[str, PlanKind]:
    """Every registered kind, by name (importing the kinds package registers them)."""
    import domain_setup.vetting.kinds  # noqa: F401  (each module registers its kind)

    return PLAN_KINDS


def plan_kind(name: str) -> PlanKind:
    """The kind called `name` (ValueError for an unknown one: a programming error)."""
    kinds = all_kinds()
    if name not in kinds:
        raise ValueError(f"unknown plan kind {name!r}; one of {', '.join(kinds)}")
    return kinds[name]


def identify(source: str) -> PlanKind:
    """The kind whose vetted function `source` is (decorators and name aside), or the
    custom-code kind."""
    all_kinds()
    return _BY_FINGERPRINT.get(fingerprint(source) or "") or PLAN_KINDS[CUSTOM]


def check_result(kind: str, result: Any, context: ContractContext) -> None:
    """Raise ``ContractViolation`` unless `result` keeps the output contract of the kind
    called `kind` given what `context` says about the run."""
    if not isinstance(context, ContractContext):
        raise ValueError(f"context must be a ContractContext, got {type(context).__name__}")
    plan_kind(kind).contract(result, context)


def fingerprint(source: str) -> str | None:
    """sha256 of a function's syntax tree without decorators, name and positions;
    None when `source` is not exactly one function definition."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except (SyntaxError, ValueError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        return None
    function = tree.body[0]
    function.decorator_list = []
    function.name = "plan"
    return hashlib.sha256(ast.dump(function, include_attributes=False).encode()).hexdigest()


def runnable(source: str) -> tuple[str, str]:
    """(module source, function name) that the sandbox runs for a submitted function: the
    submitted source itself with its decorators removed, calling its first function,
    never syft's generated wrapper (whose call target the client names)."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except (SyntaxError, ValueError) as exc:
        raise ValueError(f"the submitted code does not parse: {exc}") from None
    if not tree.body or not isinstance(tree.body[0], ast.FunctionDef):
        raise ValueError("the submitted code must start with a function definition")
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            node.decorator_list = []
    return ast.unparse(tree), tree.body[0].name


def code_sha256(source: str) -> str:
    """sha256 of the exact source text (what the audit log records)."""
    return hashlib.sha256(source.encode()).hexdigest()


def input_problems(kind: PlanKind, inputs: dict[str, str]) -> list[str]:
    """Why the request's inputs ({kwarg: "dataset/asset" or "object ..."}) do not bind
    the whole assets the kind needs."""
    problems = []
    if set(inputs) != set(kind.inputs):
        return [f"{kind.name} takes inputs {', '.join(sorted(kind.inputs))}, "
                f"got {', '.join(sorted(inputs)) or 'none'}"]
    datasets = set()
    for kwarg, wanted in kind.inputs.items():
        given = inputs[kwarg]
        if "/" in wanted:
            if given != wanted:
                problems.append(f"{kwarg} must be {wanted}, got {given}")
        else:
            dataset, _, asset = given.partition("/")
            datasets.add(dataset)
            if asset != wanted:
                problems.append(f"{kwarg} must be a dataset's whole {wanted} asset, got {given}")
    if len(datasets) > 1:
        problems.append(f"inputs come from several datasets ({', '.join(sorted(datasets))})")
    return problems


def release_table() -> list[tuple[str, str, str, str]]:
    """(kind, field, bound, why) of every declared release, registry order: the README's
    table "what leaves the domain, per plan kind, and what bounds it"."""
    kinds = sorted(all_kinds().values(), key=lambda kind: (kind.name == CUSTOM, kind.name))
    return [(kind.name, r.field, r.bound.value, r.what) for kind in kinds for r in kind.releases]


def release_table_markdown() -> str:
    """`release_table` as the README shows it (a test keeps the README true to it)."""
    rows = ["| plan kind | mechanism | field | bound | what it is, and why that bound |",
            "|---|---|---|---|---|"]
    for name, field_name, bound, why in release_table():
        mechanism = PLAN_KINDS[name].mechanism.name.replace("_", " ")
        rows.append(f"| `{name}` | {mechanism} | `{field_name}` | **{bound}** | {why} |")
    return "\n".join(rows)
