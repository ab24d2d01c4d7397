"""The advisory linter: static analysis of custom code against approval.yaml.

It is never the guard (the sandbox, the output contracts, the plan-kind registry and
the domain's binding verdict are; Python re-exports make every denylist incomplete):
its findings reach the admin as notes on custom code, and `review auto` denies custom
code it finds fault with. The source is parsed with `ast` and never executed. Four
families of checks, each reason one line starting with `line N:`:

* shape: one top-level function and nothing else (syft executes every top-level
  statement; it strips only that function's decorators, so they are ignored);
* safety: imports from the allowlist only; no forbidden built-ins, modules,
  library APIs or attributes; no dunder or private attributes; no class
  definitions, async code or `global`;
* limits: epochs, batch_size and model are literals within the limits, or come
  from `config["..."]`, whose values `check_config` checks;
* outputs: the plan returns a dict literal with allowed keys (or a vetted call's
  result) holding no private input (any parameter not listed as public: images,
  labels, ...) and nothing computed from it, directly, through aliases or
  through conditions on it, except through a declassifying call such as
  `common.training.train`, which gets private data only as its leading data
  arguments. Printing private data or raising with it is refused too (job logs
  reach the researcher).
"""

from __future__ import annotations

import ast
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from common.training_config import PARAMETERS_BY_NAME, policy_limited_parameters
from domain_setup.policy.approval import ApprovalRules

LIMITED_KEYS = tuple(p.name for p in policy_limited_parameters())
CONFIG_READ_METHODS = frozenset({"get", "keys", "values", "items", "copy"})
_DUNDER_RE = re.compile(r"__\w+__")
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


@dataclass
class Verdict:
    """The outcome of a check: ok when there are no reasons."""

    ok: bool
    reasons: list[str] = field(default_factory=list)


def check_code(source: str, rules: ApprovalRules, *,
               input_shapes: dict[str, tuple] | None = None) -> Verdict:
    """Check a submitted function's source; `input_shapes` names its asset inputs."""
    findings = _Findings()
    try:
        _check_source(source, rules, input_shapes or {}, findings)
    except SyntaxError as exc:
        findings.add(exc.lineno or 1, f"syntax error: {exc.msg}")
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, deep nesting
        findings.add(1, f"code cannot be checked ({type(exc).__name__}); simplify it")
    return findings.verdict()


def _check_source(source: str, rules: ApprovalRules, input_shapes: dict[str, tuple],
                  findings: _Findings) -> None:
    tree = ast.parse(source)
    main = _main_function(tree, findings)
    if main is not None:
        names = _Names(main, findings)
        _SafetyVisitor(rules, names, findings).check(main)
        _check_limits(main, rules, names, findings)
        _check_config_untouched(main, rules.config_parameter, findings)
        private = set(input_shapes) | (names.parameters(main) - rules.public_inputs)
        _check_outputs(main, rules, names, private, input_shapes, findings)


def check_config(config: Any, rules: ApprovalRules) -> list[str]:
    """Reasons why the `config` constant of a request breaks the limits (empty: fine)."""
    if not isinstance(config, dict):
        return [f"config must be a dict, got {type(config).__name__}"]
    return [f"config: {problem}" for key in LIMITED_KEYS if key in config
            for problem in [_limit_problem(key, config[key], rules)] if problem]


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------

class _Findings:
    """Reasons collected while checking, deduplicated and sorted by line."""

    def __init__(self) -> None:
        self._items: dict[tuple[int, str], None] = {}

    def add(self, line: int, message: str) -> None:
        self._items[(line, " ".join(message.split()))] = None

    def verdict(self) -> Verdict:
        reasons = [f"line {line}: {message}" for line, message in sorted(self._items)]
        return Verdict(ok=not reasons, reasons=reasons)


def _short(node: ast.AST, limit: int = 60) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _chain(node: ast.AST) -> tuple[ast.AST, list[str]]:
    """(root, [attr, ...]) of an attribute chain such as `torch.hub.load`."""
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return node, attrs[::-1]


def _walk_scope(node: ast.AST) -> Iterator[ast.AST]:
    """Nodes of a function body, not descending into nested functions or lambdas."""
    for child in ast.iter_child_nodes(node):
        yield child
        if not isinstance(child, _SCOPES):
            yield from _walk_scope(child)


def _arguments(args: ast.arguments) -> list[ast.arg]:
    every = args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]
    return [arg for arg in every if arg is not None]


def _target_names(target: ast.AST) -> Iterator[str]:
    """Names bound or mutated by an assignment target (`a`, `a[i]`, `a.x`, `a, b`)."""
    if isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _target_names(element)
    elif isinstance(target, ast.Starred):
        yield from _target_names(target.value)
    elif isinstance(target, (ast.Subscript, ast.Attribute)):
        root = target
        while isinstance(root, (ast.Subscript, ast.Attribute)):
            root = root.value
        if isinstance(root, ast.Name):
            yield root.id
    elif isinstance(target, ast.Name):
        yield target.id


def _brief(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _limit_problem(key: str, value: Any, rules: ApprovalRules) -> str | None:
    """Why `key=value` breaks the limits of approval.yaml, or None."""
    parameter = PARAMETERS_BY_NAME[key]
    if parameter.policy_choices:
        allowed = rules.limits[parameter.policy_choices]
        if not (isinstance(value, str) and value in allowed):
            return f"{key} {_brief(value)} is not allowed (allowed: {', '.join(allowed)})"
        return None
    limit = rules.limits[parameter.policy_max]
    minimum = rules.limits[parameter.policy_min] if parameter.policy_min else parameter.minimum
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return f"{key} must be an integer, got {_brief(value)}"
    if value < minimum:
        return f"{key} must be at least {minimum}, got {value}"
    if value > limit:
        return f"{key}={value} exceeds the limit of {limit}"
    return None


# ---------------------------------------------------------------------------
# Shape: one top-level function
# ---------------------------------------------------------------------------

def _main_function(tree: ast.Module, findings: _Findings) -> ast.FunctionDef | None:
    if not tree.body:
        findings.add(1, "no function found")
        return None
    main = tree.body[0]
    if isinstance(main, ast.AsyncFunctionDef):
        findings.add(main.lineno, "async code is not allowed")
        return None
    if not isinstance(main, ast.FunctionDef):
        findings.add(main.lineno, "the code must be a single function definition "
                                  f"(found {type(main).__name__.lower()} at the top level)")
        return None
    for extra in tree.body[1:]:
        findings.add(extra.lineno, "only one top-level function is allowed "
                                   f"(found another {type(extra).__name__.lower()})")
    return main


# ---------------------------------------------------------------------------
# Names: imports, aliases and other bindings
# ---------------------------------------------------------------------------

class _Names:
    """What each name in the function is bound to; imported names resolve to dotted paths."""

    def __init__(self, main: ast.FunctionDef, findings: _Findings):
        imported: dict[str, dict[str, int]] = {}   # name -> {dotted path: line}
        self.modules: set[str] = set()              # names bound by `import x`
        self.bindings: dict[str, list[int]] = {}    # other bindings: lines
        self.assignments: dict[str, list[ast.AST]] = {}  # `name = value` values
        for node in ast.walk(main):
            if node is main:
                self._bind_arguments(node.args)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    name = alias.asname or alias.name.split(".")[0]
                    path = alias.name if alias.asname else name
                    imported.setdefault(name, {}).setdefault(path, node.lineno)
                    self.modules.add(name)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    imported.setdefault(alias.asname or alias.name, {}).setdefault(
                        f"{node.module}.{alias.name}", node.lineno)
            else:
                self._bind_other(node)
        self.aliases = {name: next(iter(paths)) for name, paths in imported.items()
                        if len(paths) == 1 and name not in self.bindings}
        for name, paths in imported.items():
            if len(paths) > 1:
                findings.add(max(paths.values()), f"name {name!r} is imported as "
                                                  f"{' and '.join(sorted(paths))}")
            elif name in self.bindings:
                findings.add(self.bindings[name][0],
                             f"imported name {name!r} is bound again (shadowing an import)")

    def _bind(self, name: str, line: int) -> None:
        self.bindings.setdefault(name, []).append(line)

    def _bind_arguments(self, args: ast.arguments) -> None:
        for arg in _arguments(args):
            self._bind(arg.arg, arg.lineno)

    def _bind_other(self, node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self._bind(node.name, node.lineno)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            self._bind_arguments(node.args)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            self._bind(node.id, node.lineno)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            self._bind(node.name, node.lineno)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            self._bind(node.name, node.lineno)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            self._bind(node.rest, node.lineno)
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    self.assignments.setdefault(target.id, []).append(node.value)

    def only_assigned(self, name: str) -> list[ast.AST]:
        """The values of `name` when every binding of it is a plain `name = value`."""
        values = self.assignments.get(name, [])
        return values if values and len(values) == len(self.bindings.get(name, ())) else []

    @staticmethod
    def parameters(function: ast.FunctionDef) -> set[str]:
        return {arg.arg for arg in _arguments(function.args)}

    def resolve(self, node: ast.AST, *, imported_only: bool = False) -> str | None:
        """Dotted path of a name or attribute chain, through import aliases.

        With `imported_only`, None unless the chain starts at an imported name (a
        parameter called `common` does not make `common.training.train` vetted).
        """
        root, attrs = _chain(node)
        if not isinstance(root, ast.Name) or (imported_only and root.id not in self.aliases):
            return None
        return ".".join([self.aliases.get(root.id, root.id), *attrs])

    def is_call_to(self, node: ast.AST, paths: frozenset[str]) -> bool:
        """`node` is a call of an imported function listed in `paths`."""
        return (isinstance(node, ast.Call)
                and self.resolve(node.func, imported_only=True) in paths)

    def is_builtin(self, node: ast.AST, names: frozenset[str] | set[str]) -> bool:
        """`node` is a bare name from `names` that the function does not rebind."""
        return (isinstance(node, ast.Name) and node.id in names
                and node.id not in self.bindings and node.id not in self.aliases)


def _matches_prefix(path: str, prefixes: tuple[str, ...] | frozenset[str]) -> str | None:
    for prefix in prefixes:
        if path == prefix or path.startswith(prefix + "."):
            return prefix
    return None


# ---------------------------------------------------------------------------
# Safety: imports, names, attributes, constructs
# ---------------------------------------------------------------------------

class _SafetyVisitor(ast.NodeVisitor):
    """Flags forbidden imports, names, attributes, strings and constructs."""

    def __init__(self, rules: ApprovalRules, names: _Names, findings: _Findings):
        self.rules = rules
        self.names = names
        self.findings = findings
        self._call_funcs: set[int] = set()

    def check(self, main: ast.FunctionDef) -> None:
        for part in [main.args, *main.body] + ([main.returns] if main.returns else []):
            self.visit(part)

    def _flag(self, node: ast.AST, message: str) -> None:
        self.findings.add(getattr(node, "lineno", 1), message)

    def _kind(self, node: ast.AST) -> str:
        return "call" if id(node) in self._call_funcs else "name"

    # -- imports ----------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_module(node, alias.name, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self._flag(node, "relative import is not allowed")
            return
        for alias in node.names:
            if alias.name == "*":
                self._flag(node, f"star import from {node.module!r} is not allowed")
                continue
            self._check_module(node, f"{node.module}.{alias.name}", node.module)

    def _check_module(self, node: ast.AST, path: str, module: str) -> None:
        parts = path.split(".")
        bad = [p for p in parts if p in self.rules.forbidden_modules or _is_dunder(p)]
        if bad:
            self._flag(node, f"import of {path!r} is not allowed (forbidden module {bad[0]!r})")
        elif _matches_prefix(path, self.rules.forbidden_apis):
            self._flag(node, f"import of forbidden API {path!r}")
        elif not (_matches_prefix(module, self.rules.allowed_imports)
                  or _matches_prefix(path, self.rules.allowed_imports)):
            self._flag(node, f"import of {path!r} is not allowed "
                             "(not in approval.yaml imports.allowed)")

    # -- names and attributes -------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        self._call_funcs.add(id(node.func))
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        problem = self._name_problem(node)
        if problem:
            self._flag(node, problem)
        elif (isinstance(node.ctx, ast.Load) and node.id in self.names.modules
              and node.id in self.names.aliases):
            self._flag(node, f"module {node.id!r} used as a value (only as `{node.id}.name`)")
        elif self.names.is_builtin(node, {"print"}) and self._kind(node) != "call":
            self._flag(node, "print used as a value (only `print(...)` calls)")

    def _name_problem(self, node: ast.Name) -> str | None:
        name, kind = node.id, self._kind(node)
        forbidden = name in self.rules.forbidden_builtins or name in self.rules.forbidden_modules
        if forbidden and isinstance(node.ctx, ast.Load):
            return f"forbidden {kind} {name!r}"
        if _is_dunder(name):
            return f"dunder name {name!r}"
        resolved = self.names.aliases.get(name)
        if resolved and _matches_prefix(resolved, self.rules.forbidden_apis):
            return f"forbidden {kind} {resolved!r}"
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        root, attrs = _chain(node)
        problem = self._chain_problem(node, root, attrs)
        if problem:
            self._flag(node, problem)
        elif (not isinstance(node.ctx, ast.Load) and isinstance(root, ast.Name)
              and root.id in self.names.aliases):
            self._flag(node, f"assignment to module attribute {_short(node)!r}")
        if not isinstance(root, ast.Name):
            self.visit(root)

    def _chain_problem(self, node: ast.Attribute, root: ast.AST, attrs: list[str]) -> str | None:
        kind, text = self._kind(node), _short(node)
        if isinstance(root, ast.Name):
            problem = self._name_problem(ast.Name(id=root.id, ctx=ast.Load()))
            if problem:
                return f"forbidden {kind} {text!r}" if "forbidden" in problem else problem
        for attr in attrs:
            if _is_dunder(attr):
                return f"dunder attribute {attr!r} in {text!r}"
            if attr.startswith("_"):
                return f"private attribute {attr!r} in {text!r}"
        resolved = self.names.resolve(node)
        if resolved and _matches_prefix(resolved, self.rules.forbidden_apis):
            alias = "" if resolved == text else f" ({text!r})"
            return f"forbidden {kind} {resolved!r}{alias}"
        for attr in attrs:
            if attr in self.rules.forbidden_modules or attr in self.rules.forbidden_attributes:
                return f"forbidden {kind} {text!r}"
        return None

    # -- literals and constructs ------------------------------------------------------
    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            match = _DUNDER_RE.search(node.value)
            if match:
                self._flag(node, f"string mentions dunder name {match.group(0)!r}")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._flag(node, "class definitions are not allowed (use common.models)")
        self.generic_visit(node)

    def _refuse_async(self, node: ast.AST) -> None:
        self._flag(node, "async code is not allowed")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_Await = visit_AsyncFor = visit_AsyncWith = _refuse_async

    def visit_Global(self, node: ast.Global) -> None:
        self._flag(node, "global statements are not allowed")


# ---------------------------------------------------------------------------
# Limits: epochs, batch_size, model
# ---------------------------------------------------------------------------

def _limit_sites(main: ast.FunctionDef) -> Iterator[tuple[str, ast.AST]]:
    """(key, value expression) wherever code sets epochs, batch_size or model."""
    returned = {id(node.value) for node in ast.walk(main) if isinstance(node, ast.Return)}
    for node in ast.walk(main):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg in LIMITED_KEYS:
                    yield keyword.arg, keyword.value
        elif isinstance(node, ast.Dict) and id(node) not in returned:  # results are no settings
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value in LIMITED_KEYS:
                    yield key.value, value
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                key = _limited_target(target)
                literal = isinstance(node.value, ast.Constant)
                if key and node.value is not None and (literal or not isinstance(target, ast.Name)):
                    yield key, node.value  # `model = build()` is a variable, not a setting
        elif isinstance(node, (ast.FunctionDef, ast.Lambda)):
            yield from _limited_defaults(node.args)


def _limited_target(target: ast.AST) -> str | None:
    if isinstance(target, ast.Name):
        key = target.id
    elif isinstance(target, ast.Attribute):
        key = target.attr
    elif isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
        key = target.slice.value
    else:
        return None
    return key if key in LIMITED_KEYS else None


def _limited_defaults(args: ast.arguments) -> Iterator[tuple[str, ast.AST]]:
    positional = args.posonlyargs + args.args
    for arg, default in zip(positional[len(positional) - len(args.defaults):], args.defaults):
        if arg.arg in LIMITED_KEYS:
            yield arg.arg, default
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        if default is not None and arg.arg in LIMITED_KEYS:
            yield arg.arg, default


def _check_limits(main: ast.FunctionDef, rules: ApprovalRules, names: _Names,
                  findings: _Findings) -> None:
    for key, value in _limit_sites(main):
        for line, problem in _value_problems(key, value, rules, names, depth=0):
            findings.add(line, problem)


def _value_problems(key: str, value: ast.AST, rules: ApprovalRules, names: _Names,
                    depth: int) -> Iterator[tuple[int, str]]:
    """Problems of one value given for `key`: a literal, config["key"], or a name bound to those."""
    config = rules.config_parameter
    if isinstance(value, ast.Constant):
        problem = _limit_problem(key, value.value, rules)
        if problem:
            yield value.lineno, problem
        return
    if (isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name)
            and value.value.id == config and isinstance(value.slice, ast.Constant)
            and value.slice.value == key):
        return
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "get" and isinstance(value.func.value, ast.Name)
            and value.func.value.id == config and value.args
            and isinstance(value.args[0], ast.Constant) and value.args[0].value == key):
        for default in value.args[1:2]:
            yield from _value_problems(key, default, rules, names, depth + 1)
        return
    if isinstance(value, ast.Name) and depth < 5 and names.only_assigned(value.id):
        for source in names.only_assigned(value.id):
            yield from _value_problems(key, source, rules, names, depth + 1)
        return
    yield value.lineno, (f"{key} must be a literal or {config}[{key!r}] "
                         f"(found {_short(value)!r})")


def _check_config_untouched(main: ast.FunctionDef, config: str, findings: _Findings) -> None:
    """The config parameter is only read (its values are what `check_config` checked)."""
    for node in ast.walk(main):
        targets: list[ast.AST] = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr, ast.For,
                               ast.comprehension)):
            targets = [node.target]
        for target in targets:
            if config in _target_names(target):
                findings.add(target.lineno, f"{config} must not be modified or reassigned")
        for child in ast.iter_child_nodes(node):
            if (isinstance(child, ast.Name) and child.id == config
                    and isinstance(child.ctx, ast.Load) and not _reads_config(node, child)):
                findings.add(child.lineno, f"{config} may only be read ({config}[...], "
                                           f"{config}.get(...), **{config}), "
                                           f"not passed on or modified")


def _reads_config(parent: ast.AST, name: ast.Name) -> bool:
    """`name` (the config) is used by `parent` only to read a value."""
    if isinstance(parent, ast.Subscript):
        return parent.value is name
    if isinstance(parent, ast.Attribute):
        return parent.attr in CONFIG_READ_METHODS
    return isinstance(parent, ast.keyword) and parent.arg is None  # f(**config)


# ---------------------------------------------------------------------------
# Outputs: what is returned, printed or raised
# ---------------------------------------------------------------------------

class _Taint:
    """Which names hold private data, propagated over a flow-insensitive graph.

    Assignments and calls join their names into one group (`b = a`,
    `out.append(x)`, `torch.add(a, b, out=c)`): once any member holds private data
    all do, whichever way the data went, so writing through an alias
    (`b = a; b[0] = images[0]`) taints `a` too. A nested function that reads private
    data is tainted, and so is every name written under a condition or loop on
    private data (`if pixel > 0.5: bits.append(1)`). Imported names are code, never
    data; declassifying calls and safe attributes end the flow.
    """

    def __init__(self, main: ast.FunctionDef, rules: ApprovalRules, names: _Names,
                 private: set[str]):
        self.rules = rules
        self.names = names
        self.private = set(private)
        self.tainted = set(private)
        followers: dict[str, list[set[str]]] = {}
        data = set(names.bindings)  # built-ins and imports hold no data
        for sources, targets in self._edges(main):
            for source in sources & data:
                followers.setdefault(source, []).append(targets & data)
        queue = list(self.tainted)
        while queue:
            for targets in followers.get(queue.pop(), ()):
                queue.extend(targets - self.tainted)
                self.tainted |= targets
        self.guarded = {id(n) for node in ast.walk(main) for condition, stmts in
                        _conditions(node) if self.mentions(condition)
                        for stmt in stmts for n in ast.walk(stmt)}

    def mentions(self, node: ast.AST) -> bool:
        """`node` uses private data other than through a declassifying call."""
        return not self._visible_names(node).isdisjoint(self.tainted)

    def origins(self, node: ast.AST) -> list[str]:
        return sorted(self._visible_names(node) & self.private)

    def declassifies(self, call: ast.Call) -> bool:
        return (self.names.is_call_to(call, self.rules.declassifying_calls)
                or self.names.is_builtin(call.func, self.rules.safe_calls))

    def _visible_names(self, node: ast.AST) -> set[str]:
        """Names read by `node`, except inside declassifying calls and safe attributes."""
        found, stack = set(), [node]
        while stack:
            current = stack.pop()
            if isinstance(current, ast.Name):
                found.add(current.id)
            elif not ((isinstance(current, ast.Call) and self.declassifies(current))
                      or (isinstance(current, ast.Attribute)
                          and current.attr in self.rules.safe_attributes)):
                stack.extend(ast.iter_child_nodes(current))
        return found

    def _edges(self, main: ast.FunctionDef) -> Iterator[tuple[set[str], set[str]]]:
        """(names read, names then tainted) for every way data can flow."""
        for node in ast.walk(main):
            for targets, value in _flows(node):
                group = set(targets) | self._visible_names(value)
                yield group, group
            if isinstance(node, ast.Call) and not self.declassifies(node):
                inputs = node.args + [k.value for k in node.keywords]
                callee = self._visible_names(node.func) & set(_target_names(node.func))
                group = callee.union(*(self._visible_names(v) for v in inputs))
                yield group, group
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node is not main:
                yield self._visible_names(node), {node.name}
            for condition, stmts in _conditions(node):
                yield (self._visible_names(condition),
                       set().union(*(_written_names(stmt) for stmt in stmts)))


def _conditions(node: ast.AST) -> list[tuple[ast.AST, list[ast.stmt]]]:
    """(condition, statements that run depending on it) of a control-flow statement."""
    if isinstance(node, (ast.If, ast.While)):
        return [(node.test, node.body + node.orelse)]
    if isinstance(node, (ast.For, ast.AsyncFor)):
        return [(node.iter, node.body + node.orelse)]
    if isinstance(node, ast.Match):
        return [(node.subject, [stmt for case in node.cases for stmt in case.body])]
    if isinstance(node, ast.Try):  # an exception in the body decides what runs next
        handled = [stmt for handler in node.handlers for stmt in handler.body] + node.orelse
        return [(body_stmt, handled) for body_stmt in node.body]
    return []


def _written_names(stmt: ast.stmt) -> set[str]:
    """Every name a statement may bind or modify."""
    written: set[str] = set()
    for node in ast.walk(stmt):
        written.update(name for targets, _ in _flows(node) for name in targets)
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            written.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            written.add(node.name)
        elif isinstance(node, ast.Call):  # receiver and arguments: np.copyto(out, ...)
            receivers = node.args + [k.value for k in node.keywords] + [node.func]
            written.update(name for r in receivers for name in _target_names(r))
        elif isinstance(node, ast.Delete):
            written.update(n for t in node.targets for n in _target_names(t))
    return written


def _flows(node: ast.AST) -> Iterator[tuple[list[str], ast.AST]]:
    """(names written, value written) of an assignment-like node."""
    if isinstance(node, ast.Assign):
        yield [n for t in node.targets for n in _target_names(t)], node.value
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr)) and node.value:
        yield list(_target_names(node.target)), node.value
    elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
        yield list(_target_names(node.target)), node.iter
    elif isinstance(node, (ast.With, ast.AsyncWith)):
        for item in node.items:
            if item.optional_vars is not None:
                yield list(_target_names(item.optional_vars)), item.context_expr


def _check_outputs(main: ast.FunctionDef, rules: ApprovalRules, names: _Names,
                   private: set[str], shapes: dict[str, tuple], findings: _Findings) -> None:
    taint = _Taint(main, rules, names, private)

    def leak(node: ast.AST, what: str) -> None:
        origins = [f"input {o!r} has shape {tuple(shapes[o])}" for o in taint.origins(node)
                   if o in shapes]
        detail = f"; {', '.join(origins)}" if origins else ""
        findings.add(node.lineno, f"{what} private input data ({_short(node)!r}){detail}")

    for node in ast.walk(main):
        if isinstance(node, ast.Call) and names.is_builtin(node.func, {"print"}):
            for arg in node.args + [k.value for k in node.keywords]:
                if taint.mentions(arg):
                    leak(arg, "prints")
        elif isinstance(node, (ast.Raise, ast.Assert)):
            for part in (getattr(node, "exc", None), getattr(node, "msg", None)):
                if part is not None and taint.mentions(part):
                    leak(part, "puts in an exception")
        if names.is_call_to(node, rules.declassifying_calls):
            _check_declassifying_call(node, rules, names, taint, findings)
    for node in _walk_scope(main):
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            findings.add(node.lineno, "the plan must return, not yield")
        elif isinstance(node, ast.Return) and id(node) in taint.guarded:
            findings.add(node.lineno, "returns under a condition on private input data")
        elif isinstance(node, ast.Return) and node.value is not None:
            _check_return(node.value, rules, names, taint, findings, leak)


def _check_declassifying_call(call: ast.Call, rules: ApprovalRules, names: _Names,
                              taint: _Taint, findings: _Findings) -> None:
    """Private data enters train/evaluate/... only as their leading data arguments.

    Anything else (initial weights built from images, a learning rate of zero...)
    could carry pixels through the declassified result.
    """
    extra = [arg for i, arg in enumerate(call.args)
             if i >= rules.data_arguments or isinstance(arg, ast.Starred)]
    for value in extra + [k.value for k in call.keywords]:
        if taint.mentions(value):
            findings.add(value.lineno, f"private input data passed to "
                                       f"{names.resolve(call.func, imported_only=True)} "
                                       f"outside its first "
                                       f"{rules.data_arguments} arguments ({_short(value)!r})")


def _check_return(value: ast.AST, rules: ApprovalRules, names: _Names, taint: _Taint,
                  findings: _Findings, leak: Callable[[ast.AST, str], None]) -> None:
    if isinstance(value, ast.Constant) and value.value is None:
        return
    if isinstance(value, ast.Dict):
        allowed = ", ".join(sorted(rules.allowed_return_keys))
        for key, item in zip(value.keys, value.values):
            if key is None:
                findings.add(item.lineno, "dict unpacking (**) in the return value")
            elif not (isinstance(key, ast.Constant) and key.value in rules.allowed_return_keys):
                findings.add(key.lineno, f"return key {_short(key)} is not allowed "
                                         f"(allowed: {allowed})")
            if taint.mentions(item):
                leak(item, "returns")
        return
    if taint.mentions(value):
        leak(value, "returns")
    elif not _is_vetted_result(value, rules, names):
        findings.add(value.lineno, "the plan must return a dict literal with allowed keys "
                                   f"or a vetted call's result (found {_short(value)!r})")


def _is_vetted_result(value: ast.AST, rules: ApprovalRules, names: _Names) -> bool:
    """A call of a vetted function, or a name bound only to such calls."""
    if isinstance(value, ast.Name):
        sources = names.only_assigned(value.id)
        return bool(sources) and all(names.is_call_to(s, rules.vetted_calls) for s in sources)
    return names.is_call_to(value, rules.vetted_calls)
