"""The privacy mechanisms a plan kind can declare: none, DP-SGD, or noisy counts.

A mechanism sizes the noise for the ε a researcher asks at the dataset's δ (the
accounting `Mechanism` the ledger charges), says what the plan receives in place of
the researcher's ``privacy`` constant, and turns a checked result into what may leave
(noisy counts into metrics). The noise's randomness is always the domain's: the seed
DP-SGD receives comes from `secrets` here, in the server, at run time, and the counts'
noise is drawn here from a generator seeded the same way.

    DP_SGD.size(target_epsilon=3, delta=1e-5, n_samples=2400, config=config).noise_multiplier
    DP_SGD.plan_privacy(accounting, {"target_epsilon": 3, "max_grad_norm": 1.0}, delta=1e-5)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from common.dp_accounting import Mechanism, dp_sgd_mechanism, gaussian_count_mechanism

DEFAULT_MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class PrivacyMechanism:
    """How a plan kind spends privacy; the base is "none" (nothing to size or charge)."""

    name: str = "none"
    request_keys: tuple[str, ...] = ()  # what the researcher's `privacy` constant holds

    @property
    def private(self) -> bool:
        return self.name != "none"

    def size(self, *, target_epsilon: float, delta: float, n_samples: int,
             config: dict) -> Mechanism:
        """The release, as the accountant sees it, that costs `target_epsilon`."""
        raise ValueError(f"the {self.name} mechanism spends no privacy")

    def plan_privacy(self, accounting: Mechanism, asked: dict, *, delta: float) -> dict:
        """What the plan gets as its ``privacy`` input (the domain's, not the request's)."""
        return {}

    def post_process(self, result: dict, accounting: Mechanism) -> dict:
        """What may leave of a checked result (before the declared-fields filter)."""
        return dict(result)


@dataclass(frozen=True)
class DpSgd(PrivacyMechanism):
    """DP-SGD in the plan: Poisson batches, per-sample clipping, Gaussian noise; the domain
    gives it the noise multiplier for this many steps and the seed of its randomness."""

    def size(self, *, target_epsilon: float, delta: float, n_samples: int,
             config: dict) -> Mechanism:
        return dp_sgd_mechanism(target_epsilon=target_epsilon, delta=delta,
                                n_samples=n_samples, batch_size=int(config["batch_size"]),
                                epochs=int(config["epochs"]))

    def plan_privacy(self, accounting: Mechanism, asked: dict, *, delta: float) -> dict:
        return {"noise_multiplier": accounting.noise_multiplier,
                "max_grad_norm": float(asked.get("max_grad_norm", DEFAULT_MAX_GRAD_NORM)),
                "delta": delta, "noise_seed": secrets.randbits(64)}


@dataclass(frozen=True)
class NoisyCounts(PrivacyMechanism):
    """The plan counts images by label and score bin (sensitivity 1); the server adds
    Gaussian noise to every count and releases only metrics of the noisy counts."""

    def size(self, *, target_epsilon: float, delta: float, n_samples: int,
             config: dict) -> Mechanism:
        return gaussian_count_mechanism(target_epsilon=target_epsilon, delta=delta)

    def post_process(self, result: dict, accounting: Mechanism) -> dict:
        import numpy as np

        from common.dp_metrics import add_gaussian_noise, metrics_from_histogram

        rng = np.random.default_rng(secrets.randbits(128))
        noisy = add_gaussian_noise(result["histogram"], accounting.noise_multiplier, rng)
        return {"metrics": metrics_from_histogram(noisy)}


NO_MECHANISM = PrivacyMechanism()
DP_SGD = DpSgd("dp_sgd", ("target_epsilon", "max_grad_norm"))
NOISY_COUNTS = NoisyCounts("noisy_counts", ("target_epsilon",))

