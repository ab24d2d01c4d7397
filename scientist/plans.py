"""Training and evaluation plans: the code a researcher sends into a hospital domain.

A plan is a plain function. Inside the domain it runs with the private tensors;
locally it runs with the mock ones, unchanged. Its imports sit inside its body
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


def train_xray_plan(images, labels, config, initial_weights):
    """Train inside the domain; return the weights and per-epoch loss/accuracy."""
    from common.training import train

    result = train(images, labels, model=config["model"], epochs=config["epochs"],
                   lr=config["lr"], batch_size=config["batch_size"], seed=config["seed"],
                   initial_weights=initial_weights or None)
    return {"weights": result["weights"], "history": result["history"],
            "n_samples": result["n_samples"]}


def evaluate_xray_plan(images, labels, weights, config):
    """Evaluate weights on the hospital's held-out split; return aggregate metrics only."""
    from common.training import evaluate

    return {"metrics": evaluate(images, labels, weights, model=config["model"])}


def secure_train_xray_plan(images, labels, config, initial_weights, aggregator_keys):
    """Train, scale by the sample count, share among the aggregators, seal each share."""
    from common.training import train
    from common.secret_sharing import share_state_dict
    from common.sealing import key_from_text, seal_shares

    result = train(images, labels, model=config["model"], epochs=config["epochs"],
                   lr=config["lr"], batch_size=config["batch_size"], seed=config["seed"],
                   initial_weights=initial_weights or None)
    n_samples = result["n_samples"]
    public_keys = aggregator_keys["public_keys"]
    scaled = {name: value * n_samples for name, value in result["weights"].items()}
    shares = share_state_dict(scaled, len(public_keys))
    sealed = seal_shares(shares, [key_from_text(k) for k in public_keys])
    return {"sealed_shares": sealed, "n_samples": n_samples, "history": result["history"]}


def aggregate_shares_plan(aggregation_key, sealed_shares):
    """Open the shares sealed to this hospital and release only their sum."""
    import numpy as np
    from common.sealing import open_and_sum
    from common.wire import dumps

    # the key asset is 32 uint8; syft may hand it over widened, so narrow it explicitly
    private_key = np.asarray(aggregation_key).astype(np.uint8).tobytes()
    total = open_and_sum(sealed_shares["ciphertexts"], private_key)
    return {"partial_sum": dumps(total), "n_shares": len(sealed_shares["ciphertexts"])}


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
