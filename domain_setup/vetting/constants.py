"""The schemas of the constants a researcher gives a vetted plan, checked before approval.

Each constant a plan kind names has one check here: the training config (every
parameter of `common.training_config`), weights that fit the config's model, a secure
round's spec (`common.aggregation.RoundSpec`, whose model digest must be this very
config and these initial weights), and the ε (and clipping norm) asked, in the keys
of the kind's privacy mechanism.

    constant_problems(plan_kind("train"), {"config": {...}, "initial_weights": {}})   # []
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common.training_config import PARAMETERS_BY_NAME, validate_training_config

MAX_TARGET_EPSILON = 100.0
MAX_GRAD_NORM = 100.0
MAX_WEIGHT = 1e6  # |value| of a researcher's weights: trained models stay far below


def constant_problems(kind: Any, constants: dict[str, Any]) -> list[str]:
    """Why the request's constants break the kind's schema (empty: fine)."""
    if set(constants) != set(kind.constants):
        return [f"{kind.name} takes constants {', '.join(kind.constants) or 'none'}, "
                f"got {', '.join(sorted(constants)) or 'none'}"]
    problems: list[str] = []
    config = constants.get("config")
    if "config" in kind.constants:
        problems += config_problems(config)
    model = config.get("model") if isinstance(config, dict) else None
    if constants.get("initial_weights") not in ({}, None):
        problems += weights_problems("initial_weights", constants["initial_weights"], model)
    if "weights" in constants:
        problems += weights_problems("weights", constants["weights"], model)
    if "aggregator_keys" in constants:
        problems += round_problems(constants)
    if "job" in constants:
        problems += federated_job_problems(constants["job"], config, private=kind.private)
    if "service" in constants:
        from common.mpc.service import model_share_problems, service_problems

        problems += (service_problems(constants["service"])
                     or model_share_problems(constants.get("model_share"), constants["service"]))
    if "privacy" in constants:
        problems += privacy_request_problems(kind.mechanism.request_keys, constants["privacy"])
    if kind.private and "config" in kind.constants and isinstance(config, dict):
        problems += dp_config_problems(config)
    return problems


def dp_config_problems(config: dict) -> list[str]:
    """A DP plan's config may not set the federated knobs, which DP-SGD training refuses
    (better at review than as a failure inside the sandbox)."""
    from common.training_config import federated_knobs_set

    refused = federated_knobs_set(config)
    return [f"config: DP-SGD training does not take {', '.join(refused)}; leave it at its "
            "default"] if refused else []


def privacy_request_problems(keys: tuple[str, ...], privacy: Any) -> list[str]:
    """The researcher asks for an ε (and a clipping norm); δ and the noise are the domain's."""
    if not isinstance(privacy, dict) or set(privacy) != set(keys):
        return [f"privacy must be {{{', '.join(repr(k) + ': number' for k in keys)}}} "
                "(delta and the noise are set by the domain)"]
    problems = []
    for key, high in (("target_epsilon", MAX_TARGET_EPSILON), ("max_grad_norm", MAX_GRAD_NORM)):
        value = privacy.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 < value <= high:
            problems.append(f"privacy.{key} must be a number above 0 and at most {high:g}")
    return problems


def config_problems(config: Any) -> list[str]:
    """Why `config` is not a complete, valid training config."""
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


def weights_problems(what: str, weights: Any, model: Any) -> list[str]:
    """Why `weights` are not a state dict of the config's model."""
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
    for name in expected:
        try:
            values = np.asarray(weights[name], dtype=np.float64)
        except (TypeError, ValueError):
            return [f"{what}[{name!r}] is not numbers"]
        if not np.isfinite(values).all() or np.abs(values).max(initial=0.0) > MAX_WEIGHT:
            return [f"{what}[{name!r}] holds values that are not finite or beyond "
                    f"±{MAX_WEIGHT:g}"]
    return []


def federated_job_problems(job: Any, config: Any, *, private: bool = False) -> list[str]:
    """Why ``job`` is not a federated job's constant whose strategy trains with `config`
    (with DP-SGD when `private`)."""
    from common.federated_job import job_problems
    from common.strategies import strategy_from_constant

    problems = job_problems(job)
    if problems or not isinstance(config, dict):
        return problems
    strategy = strategy_from_constant(job["strategy"])
    if strategy.client_config(config) != config:
        return [f"job.strategy {strategy.name} trains with another config (its "
                "client_config of this one)"]
    if strategy.needs_control and private:
        return [f"job.strategy {strategy.name} keeps control variates, which DP-SGD does not"]
    return [f"job.strategy: {problem}" for problem in strategy.config_problems(config)]


def round_problems(constants: dict[str, Any]) -> list[str]:
    """Why ``aggregator_keys`` is not a round spec binding this config and initial weights."""
    from common.aggregation import RoundSpec

    try:
        spec = RoundSpec.from_constant(constants["aggregator_keys"])
    except Exception as exc:  # SharingError / key parsing: a one-line reason
        return [f"aggregator_keys: {exc}"]
    return model_binding_problems(spec, constants)


def model_binding_problems(spec: Any, constants: dict[str, Any]) -> list[str]:
    """Why `spec`'s model digest is not this request's config and initial weights."""
    from common.aggregation import model_digest

    config = constants.get("config")
    if not isinstance(config, dict):
        return []  # config_problems says why
    try:
        expected = model_digest(config, constants.get("initial_weights") or None)
    except (TypeError, ValueError) as exc:
        return [f"aggregator_keys: the model digest cannot be computed ({exc})"]
    if spec.model != expected:
        return ["aggregator_keys: the round's model digest is not this request's config and "
                "initial weights: every party of a round must train the same model"]
    return []
