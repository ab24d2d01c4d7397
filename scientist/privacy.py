"""Differential privacy for the researcher: ask for an ε, know the cost before submitting,
read what is left, and try a private plan on the mock.

The domain sets δ and the noise; the researcher asks for an ε (and, for training, a
clipping norm). The cost is computed with the same accountant the domain charges with
(`common.dp_accounting`), so the estimate is the charge.

    privacy = private_training(target_epsilon=3.0)          # a plan's `privacy` constant
    estimate_training(plan, privacy, n_samples=2400, delta=1e-5)["noise_multiplier"]
    my_budget()                                              # [{"dataset": "xray", "left": 17.0, ...}]
    submit_plan(client, train_private_xray_plan, inputs=train,
                constants={"config": plan.config(), "initial_weights": {},
                           "privacy": privacy}, reason="DP model, ε 3")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.dp_accounting import dp_sgd_mechanism, dp_sgd_steps
from common.vetted_plans import evaluate_private_xray_plan, train_private_xray_plan  # noqa: F401

DEFAULT_MAX_GRAD_NORM = 1.0


def private_training(target_epsilon: float, max_grad_norm: float = DEFAULT_MAX_GRAD_NORM) -> dict:
    """The `privacy` constant of `train_private_xray_plan`."""
    return {"target_epsilon": float(target_epsilon), "max_grad_norm": float(max_grad_norm)}


def private_evaluation(target_epsilon: float) -> dict:
    """The `privacy` constant of `evaluate_private_xray_plan`."""
    return {"target_epsilon": float(target_epsilon)}


def estimate_training(plan: Any, privacy: dict, *, n_samples: int, delta: float) -> dict:
    """What DP training of `plan` (a TrainingPlan) on `n_samples` images costs: the noise
    multiplier the domain will use, the steps and the sample rate, for the ε asked."""
    config = plan.config()
    mechanism = dp_sgd_mechanism(target_epsilon=privacy["target_epsilon"], delta=delta,
                                 n_samples=n_samples, batch_size=config["batch_size"],
                                 epochs=config["epochs"])
    return {"epsilon": privacy["target_epsilon"], "delta": delta,
            **mechanism.to_dict()}


def run_private_locally(plan: Any, privacy: dict, images: Any, labels: Any, *,
                        delta: float = 1e-5) -> dict:
    """Run `train_private_xray_plan` here on mock data with the noise the domain would
    choose for this many images."""
    estimate = estimate_training(plan, privacy, n_samples=len(labels), delta=delta)
    return train_private_xray_plan(images, labels, plan.config(), {}, {
        "noise_multiplier": estimate["noise_multiplier"],
        "max_grad_norm": privacy.get("max_grad_norm", DEFAULT_MAX_GRAD_NORM), "delta": delta})


def my_budget(connection_file: str | Path | None = None) -> list[dict]:
    """The caller's privacy accounts on the domain: per dataset δ, ε spent (composed and
    summed), budget, left, and the releases."""
    from scientist.connect import domain_get

    return domain_get("/pneumosyft/privacy/me", connection_file)["accounts"]


__all__ = ["dp_sgd_steps", "estimate_training", "my_budget", "private_evaluation",
           "private_training", "run_private_locally"]
