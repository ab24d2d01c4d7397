"""Training and evaluation plans: the code a researcher sends into a hospital domain.

A plan is a plain function. Inside the domain it runs with the private tensors, in the
hospital's sandbox; locally it runs with the mock ones, unchanged. The four plans here
come from `common.vetted_plans`, the hospital's catalogue: the domain recognises them by
their source, so they can be approved without a custom-code review. Its imports sit inside its body
(syft runs the source with ``exec``) and come from the hospital's vetted modules
(``common.training``, ``common.secret_sharing``, ``common.sealing``). It returns
plain data only: weights as numpy arrays, scalar metrics, sealed shares.

    plan = TrainingPlan(model="small_cnn", epochs=3)
    result = plan.run_locally(mock_images, mock_labels)      # try it on the mock
"""

from __future__ import annotations

from dataclasses import asdict, field, make_dataclass
from typing import Any

from common.training_config import TRAINING_PARAMETERS, validate_training_config
from common.vetted_plans import (  # noqa: F401  (the hospital's catalogue, by source identity)
    evaluate_xray_plan,
    secure_train_xray_plan,
    train_xray_plan,
)


class _TrainingPlanMethods:
    """What a `TrainingPlan` does; its fields come from `common.training_config`."""

    def __post_init__(self) -> None:
        validate_training_config(self.config())

    def config(self) -> dict:
        return asdict(self)

    def run_locally(self, images: Any, labels: Any, initial_weights: dict | None = None) -> dict:
        """Run the training plan here (on mock data), exactly as the domain would."""
        return train_xray_plan(images, labels, self.config(), initial_weights or {})

    def evaluate_locally(self, images: Any, labels: Any, weights: dict) -> dict:
        """Run the evaluation plan here (on mock data)."""
        return evaluate_xray_plan(images, labels, weights, self.config())


TrainingPlan = make_dataclass(
    "TrainingPlan", [(p.name, p.kind, field(default=p.default)) for p in TRAINING_PARAMETERS],
    bases=(_TrainingPlanMethods,), namespace={"__module__": __name__, "__doc__": (
        "Hyper-parameters of a training plan (one field per `common.training_config` "
        "parameter); `config()` is what the domain receives.\n\n"
        "    TrainingPlan(model=\"small_cnn\", epochs=3, lr=1e-3, batch_size=64, seed=0)")})
