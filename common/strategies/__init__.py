"""Federated strategies: how the researcher turns a round's weighted average into the
next global model, and what each hospital is asked to train with.

Every strategy sees only the weighted average of the hospitals' models (what secure
aggregation reveals), never one hospital's weights, so each works plain or secure.

    strategy = make_strategy("fedadam", server_lr=0.01)
    config = strategy.client_config(plan.config())         # e.g. FedProx adds its mu
    global_weights = strategy.next_global(global_weights, average)

| name      | what it does                                                   |
|-----------|----------------------------------------------------------------|
| `fedavg`  | the average is the next global model (McMahan et al., 2017)    |
| `fedprox` | FedAvg; hospitals add (mu/2)·‖w − w_global‖² (Li et al., 2020) |
| `fedavgm` | server momentum on the average's step (Hsu et al., 2019)       |
| `fedadam` | server Adam on the average's step (Reddi et al., 2021)         |
| `scaffold`| control variates against client drift (Karimireddy et al., 2020); |
|           | federated jobs only: each hospital keeps its own between rounds |
"""

from __future__ import annotations

from typing import Callable

from common.strategies.base import Strategy
from common.strategies.fedavg import FedAvg
from common.strategies.fedopt import FedAdam, FedAvgM
from common.strategies.fedprox import FedProx
from common.strategies.scaffold import Scaffold

STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "fedavg": FedAvg, "fedprox": FedProx, "fedavgm": FedAvgM, "fedadam": FedAdam,
    "scaffold": Scaffold}


def make_strategy(name: str, **options) -> Strategy:
    """The strategy called `name` (one of STRATEGIES) with its options.

        >>> make_strategy("fedprox", mu=0.1).client_config({"epochs": 1})["proximal_mu"]
        0.1
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name](**options)


def strategy_from_constant(value: object) -> Strategy:
    """The strategy a federated job's request names, ``{"name": ..., "options": {...}}``
    (what `describe_constant` gives), from outside input: ValueError with one line.

        >>> strategy_from_constant({"name": "fedavgm", "options": {"momentum": 0.5}}).momentum
        0.5
    """
    if not isinstance(value, dict) or set(value) != {"name", "options"} \
            or not isinstance(value["options"], dict):
        raise ValueError("a strategy is {'name': ..., 'options': {...}}")
    options = value["options"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in options.values()):
        raise ValueError("strategy options are numbers")
    try:
        return make_strategy(str(value["name"]), **options)
    except TypeError as exc:  # an option the strategy does not take
        raise ValueError(f"{value['name']}: {exc}") from None


def describe_constant(strategy: Strategy) -> dict:
    """The constant that names `strategy` in a federated job's request."""
    return {"name": strategy.name, "options": strategy.options()}


__all__ = ["STRATEGIES", "FedAdam", "FedAvg", "FedAvgM", "FedProx", "Scaffold", "Strategy",
           "describe_constant", "make_strategy", "strategy_from_constant"]
