"""The catalogue of vetted plans: recognised by the identity of their source.

A submitted function is a catalogue plan when its syntax tree, decorators and name
aside, is exactly that of one of `common.vetted_plans`. Its constants are then
checked against a schema (`constant_problems`) and its inputs must bind whole
private assets of the right split (`input_problems`): no slices, subsets or
crafted labels reach `train` or `evaluate`. Anything else is custom code.

    plan = identify(source)                 # VettedPlan or None (custom code)
    plan.name, plan.output                  # "train", "train"
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

from common import vetted_plans
from common.training_config import validate_training_config

AGGREGATION_KEY_ASSET = "aggregation/x25519_private"


@dataclass(frozen=True)
class VettedPlan:
    """A catalogue entry: its function, the assets it must bind, its constants."""

    name: str
    function: Callable
    inputs: dict  # kwarg -> asset name in the dataset ("train_images"), or a fixed binding
    constants: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        return fingerprint(inspect.getsource(self.function)) or ""


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


CATALOGUE: tuple[VettedPlan, ...] = (
    VettedPlan("train", vetted_plans.train_xray_plan,
               {"images": "train_images", "labels": "train_labels"},
               ("config", "initial_weights")),
    VettedPlan("evaluate", vetted_plans.evaluate_xray_plan,
               {"images": "test_images", "labels": "test_labels"}, ("weights", "config")),
    VettedPlan("secure_train", vetted_plans.secure_train_xray_plan,
               {"images": "train_images", "labels": "train_labels",
                "aggregation_key": AGGREGATION_KEY_ASSET},
               ("config", "initial_weights", "aggregator_keys")),
    VettedPlan("train_private", vetted_plans.train_private_xray_plan,
               {"images": "train_images", "labels": "train_labels"},
               ("config", "initial_weights", "privacy")),
    VettedPlan("secure_train_private", vetted_plans.secure_train_private_xray_plan,
               {"images": "train_images", "labels": "train_labels",
                "aggregation_key": AGGREGATION_KEY_ASSET},
               ("config", "initial_weights", "aggregator_keys", "privacy")),
    VettedPlan("evaluate_private", vetted_plans.evaluate_private_xray_plan,
               {"images": "test_images", "labels": "test_labels"},
               ("weights", "config", "privacy")),
)
_BY_FINGERPRINT = {plan.fingerprint: plan for plan in CATALOGUE}


def identify(source: str) -> VettedPlan | None:
    """The catalogue plan whose source this is, or None for custom code."""
    return _BY_FINGERPRINT.get(fingerprint(source) or "")


def input_problems(plan: VettedPlan, inputs: dict[str, str]) -> list[str]:
    """Why the request's inputs ({kwarg: "dataset/asset" or "object ..."}) do not bind
    the whole assets the plan needs."""
    problems = []
    if set(inputs) != set(plan.inputs):
        return [f"{plan.name} takes inputs {', '.join(sorted(plan.inputs))}, "
                f"got {', '.join(sorted(inputs)) or 'none'}"]
    datasets = set()
    for kwarg, wanted in plan.inputs.items():
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


def constant_problems(plan: VettedPlan, constants: dict[str, Any]) -> list[str]:
    """Why the request's constants break the plan's schema (empty: fine)."""
    if set(constants) != set(plan.constants):
        return [f"{plan.name} takes constants {', '.join(plan.constants) or 'none'}, "
                f"got {', '.join(sorted(constants)) or 'none'}"]
    problems: list[str] = []
    config = constants.get("config")
    if "config" in plan.constants:
        problems += _config_problems(config)
    model = config.get("model") if isinstance(config, dict) else None
    if "initial_weights" in constants and constants["initial_weights"] not in ({}, None):
        problems += _weights_problems("initial_weights", constants["initial_weights"], model)
    if "weights" in constants:
        problems += _weights_problems("weights", constants["weights"], model)
    if "aggregator_keys" in constants:
        problems += _aggregator_keys_problems(constants["aggregator_keys"])
    if "privacy" in constants:
        problems += _privacy_request_problems(plan.name, constants["privacy"])
    return problems


PRIVACY_REQUEST_KEYS = {"train_private": ("target_epsilon", "max_grad_norm"),
                        "secure_train_private": ("target_epsilon", "max_grad_norm"),
                        "evaluate_private": ("target_epsilon",)}
MAX_GRAD_NORM = 100.0


def _privacy_request_problems(plan_name: str, privacy: Any) -> list[str]:
    """The researcher asks for an ε (and a clipping norm); δ and the noise are the domain's."""
    keys = PRIVACY_REQUEST_KEYS[plan_name]
    if not isinstance(privacy, dict) or set(privacy) != set(keys):
        return [f"privacy must be {{{', '.join(repr(k) + ': number' for k in keys)}}} "
                "(delta and the noise are set by the domain)"]
    problems = []
    for key, high in (("target_epsilon", 100.0), ("max_grad_norm", MAX_GRAD_NORM)):
        value = privacy.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 < value <= high:
            problems.append(f"privacy.{key} must be a number above 0 and at most {high:g}")
    return problems


def _config_problems(config: Any) -> list[str]:
    from common.training_config import PARAMETERS_BY_NAME

    if not isinstance(config, dict):
        return [f"config must be a dict, got {type(config).__name__}"]
    missing = sorted(name for name, p in PARAMETERS_BY_NAME.items()
                     if name not in config and not p.optional)
    if missing:
        return [f"config lacks {', '.join(missing)}"]
    try:
        validate_training_config(config)
    except Exception as exc:  # PneumoSyftError with a one-line reason
        return [f"config: {exc}"]
    return []


def _weights_problems(what: str, weights: Any, model: Any) -> list[str]:
    from common.models import build_model

    if not isinstance(weights, dict):
        return [f"{what} must be a dict of arrays"]
    try:
        expected = build_model(str(model)).state_dict()
    except ValueError as exc:
        return [f"{what}: {exc}"]
    if set(weights) != set(expected):
        return [f"{what} do not name the {model} model's weights"]
    for name, reference in expected.items():
        shape = tuple(getattr(weights[name], "shape", ()))
        if shape != tuple(reference.shape):
            return [f"{what}[{name!r}] has shape {shape}, the model expects "
                    f"{tuple(reference.shape)}"]
    return []


def _aggregator_keys_problems(keys: Any) -> list[str]:
    from common.aggregation import RoundSpec

    try:
        RoundSpec.from_constant(keys)
    except Exception as exc:  # SharingError / key parsing: a one-line reason
        return [f"aggregator_keys: {exc}"]
    return []
