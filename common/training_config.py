"""The training configuration, declared once: its parameters, defaults, bounds and policy limits.

The researcher's `TrainingPlan` takes its fields and checks from here; the domain's
code rules check a request's ``config`` against the limits that ``approval.yaml``
sets for the parameters marked `policy_...` here, and ``approval.yaml``'s
``limits:`` section is validated against the same names. A new hyper-parameter is
one `Parameter` line.

    validate_training_config({"model": "small_cnn", "epochs": 3, "lr": 1e-3,
                              "batch_size": 64, "seed": 0})
    default_training_config()["epochs"]        # 3
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable

from common.errors import PneumoSyftError
from common.models import model_names


@dataclass(frozen=True)
class Parameter:
    """One hyper-parameter: type, default, hard bounds, and the approval.yaml limits on it.

    `policy_max` / `policy_min` name integer limits of approval.yaml's ``limits:``;
    `policy_choices` names its list of allowed values (for the model)."""

    name: str
    kind: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: Callable[[], tuple[str, ...]] | None = None
    policy_max: str | None = None
    policy_min: str | None = None
    policy_choices: str | None = None
    includes_minimum: bool = False  # a float may equal `minimum` (else strictly above)
    optional: bool = False  # may be left out of a request's config: the default applies
    federated: bool = False  # a federated-training knob that DP-SGD plans do not take

    @property
    def policy_limited(self) -> bool:
        return bool(self.policy_max or self.policy_min or self.policy_choices)

    def problem(self, value: Any) -> str | None:
        """Why `value` is not a valid setting (hard bounds only), or None."""
        if self.choices is not None:
            if value not in self.choices():
                return f"unknown {self.name} {value!r}; one of {', '.join(self.choices())}"
            return None
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                                 or (self.minimum is not None and value < self.minimum)):
            return f"{self.name} must be a positive integer" if self.minimum == 1 else \
                f"{self.name} must be an integer" if self.minimum is None else \
                f"{self.name} must be an integer of at least {self.minimum:g}"
        if self.kind is int and self.maximum is not None and value > self.maximum:
            return f"{self.name} must be at most {self.maximum:g}"
        if self.kind is float:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                return f"{self.name} must be a number"
            above = float(value) >= self.minimum if self.includes_minimum \
                else float(value) > self.minimum
            if not (above and float(value) < self.maximum):
                return f"{self.name} must be between {self.minimum:g} and {self.maximum:g}"
        return None


def optimiser_names() -> tuple[str, ...]:
    """The local optimisers `common.training.train` knows."""
    from common.training import OPTIMISERS

    return tuple(OPTIMISERS)


TRAINING_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("model", str, "small_cnn", "architecture (common.models)", choices=model_names,
              policy_choices="models"),
    Parameter("epochs", int, 3, "passes over the training images", minimum=1,
              policy_max="max_epochs"),
    Parameter("lr", float, 1e-3, "learning rate of the local optimiser", minimum=0.0,
              maximum=1.0),
    Parameter("batch_size", int, 64, "images per optimiser step", minimum=1,
              policy_max="max_batch_size", policy_min="min_batch_size"),
    Parameter("seed", int, 0, "seed of initialisation and batch order"),
    Parameter("proximal_mu", float, 0.0, "FedProx proximal term towards the global model "
              "(0: plain local training)", minimum=0.0, maximum=100.0, includes_minimum=True,
              optional=True, federated=True),
    Parameter("class_balancing", str, "none", "loss weights: 'balanced' weighs both classes "
              "equally in each hospital", choices=lambda: CLASS_BALANCING, optional=True,
              federated=True),
    Parameter("validation_fraction", float, 0.0, "share of each hospital's training images "
              "held out to validate the model it receives", minimum=0.0, maximum=0.5,
              includes_minimum=True, optional=True, federated=True),
    Parameter("optimiser", str, "adam", "local optimiser: 'adam', or 'sgd' (plain steps, "
              "which a server optimiser such as FedAvgM turns into momentum across hospitals)",
              choices=optimiser_names, optional=True, federated=True),
    Parameter("local_steps", int, 0, "at most this many optimiser steps per round (0: every "
              "batch of every epoch); equal steps at every hospital, however many images it has",
              minimum=0, maximum=100_000, optional=True, federated=True),
)
CLASS_BALANCING = ("none", "balanced")
PARAMETERS_BY_NAME = {p.name: p for p in TRAINING_PARAMETERS}


def default_training_config() -> dict:
    """Every parameter at its default."""
    return {p.name: p.default for p in TRAINING_PARAMETERS}


def validate_training_config(config: dict) -> dict:
    """`config` checked against the hard bounds (PneumoSyftError on the first problem)."""
    unknown = sorted(set(config) - set(PARAMETERS_BY_NAME))
    if unknown:
        raise PneumoSyftError(f"unknown training parameter(s) {', '.join(unknown)}; "
                              f"known: {', '.join(PARAMETERS_BY_NAME)}")
    for name, value in config.items():
        problem = PARAMETERS_BY_NAME[name].problem(value)
        if problem:
            raise PneumoSyftError(problem)
    return dict(config)


def federated_knobs_set(values: dict) -> list[str]:
    """The federated-training parameters (FedProx, class balancing, validation, local
    optimiser and steps) that `values` sets away from their defaults: what DP-SGD
    training refuses.

        >>> federated_knobs_set({"proximal_mu": 0.1, "class_balancing": "none"})
        ['proximal_mu']
    """
    return [p.name for p in TRAINING_PARAMETERS
            if p.federated and values.get(p.name, p.default) != p.default]


def policy_limited_parameters() -> tuple[Parameter, ...]:
    """The parameters approval.yaml limits (checked in every request's config)."""
    return tuple(p for p in TRAINING_PARAMETERS if p.policy_limited)


def policy_limit_names() -> tuple[str, ...]:
    """The keys of approval.yaml's ``limits:`` that bound training parameters."""
    names: list[str] = []
    for p in policy_limited_parameters():
        names += [n for n in (p.policy_max, p.policy_min, p.policy_choices) if n]
    return tuple(names)
