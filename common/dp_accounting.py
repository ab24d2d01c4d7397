"""Differential-privacy accounting: one accountant for the researcher's estimate and the
domain's ledger, so that what a plan is said to cost before submission is what it is
charged.

Every release is a `Mechanism`: ``steps`` compositions of the Gaussian mechanism with
noise multiplier ``noise_multiplier`` (noise std / sensitivity) on a Poisson sample of
rate ``sample_rate``. DP-SGD is (σ, q = batch/n, steps = epochs · n/batch); a noisy
count release (DP evaluation) is (σ, 1, 1). Releases compose with Opacus' RDP
accountant, which is tighter than adding their ε:

    >>> m = dp_sgd_mechanism(target_epsilon=3.0, delta=1e-5, n_samples=2400,
    ...                      batch_size=64, epochs=2)
    >>> round(epsilon([m], 1e-5), 1), round(epsilon([m, m], 1e-5), 1)   # not 6.0
    (3.0, 3.6)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable

# RDP orders: Opacus' defaults and more large ones (small ε with few steps needs them)
ALPHAS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
               + list(range(64, 513, 16)))
EPSILON_TOLERANCE = 0.01


@dataclass(frozen=True)
class Mechanism:
    """One release as the accountant sees it (see the module's docstring)."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ValueError(f"noise multiplier must be above 0, got {self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample rate must be in (0, 1], got {self.sample_rate}")
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps}")

    def to_dict(self) -> dict:
        return asdict(self)


def epsilon(mechanisms: Iterable[Mechanism], delta: float) -> float:
    """The ε at `delta` of all `mechanisms` composed (RDP); 0 for none."""
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    mechanisms = list(mechanisms)
    if not mechanisms:
        return 0.0
    _check_delta(delta)
    rdp = sum(compute_rdp(q=m.sample_rate, noise_multiplier=m.noise_multiplier,
                          steps=int(m.steps), orders=list(ALPHAS)) for m in mechanisms)
    eps, _ = get_privacy_spent(orders=list(ALPHAS), rdp=rdp, delta=delta)
    return float(eps)


def noise_multiplier_for(target_epsilon: float, delta: float, sample_rate: float,
                         steps: int) -> float:
    """The smallest noise multiplier (within 1 %) whose release costs at most
    `target_epsilon` at `delta`."""
    _check_epsilon(target_epsilon)
    _check_delta(delta)
    low, high = 0.0, 10.0
    while epsilon([Mechanism(high, sample_rate, steps)], delta) > target_epsilon:
        low, high = high, 2 * high
        if high > 1e6:
            raise ValueError(f"no noise reaches ε = {target_epsilon} in {steps} steps")
    while (high - low) / high > EPSILON_TOLERANCE:
        middle = (low + high) / 2
        if middle > 0 and epsilon([Mechanism(middle, sample_rate, steps)], delta) \
                <= target_epsilon:
            high = middle
        else:
            low = middle
    return high


def dp_sgd_steps(n_samples: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """(sample rate, steps) of DP-SGD with Poisson sampling, exactly as Opacus runs it: an
    epoch is ceil(n / batch_size) steps, each taking every image with probability
    1 / (steps per epoch)."""
    if n_samples < 1 or batch_size < 1 or epochs < 1:
        raise ValueError("n_samples, batch_size and epochs must be positive")
    per_epoch = math.ceil(n_samples / batch_size)
    return 1.0 / per_epoch, int(epochs) * per_epoch


def dp_sgd_mechanism(*, target_epsilon: float, delta: float, n_samples: int,
                     batch_size: int, epochs: int) -> Mechanism:
    """The DP-SGD release that costs `target_epsilon` for this much training."""
    sample_rate, steps = dp_sgd_steps(n_samples, batch_size, epochs)
    return Mechanism(noise_multiplier_for(target_epsilon, delta, sample_rate, steps),
                     sample_rate, steps)


def gaussian_count_mechanism(*, target_epsilon: float, delta: float) -> Mechanism:
    """One release of counts (sensitivity 1 each, L2 over a histogram where one person
    changes one count) that costs `target_epsilon`."""
    return Mechanism(noise_multiplier_for(target_epsilon, delta, 1.0, 1), 1.0, 1)


def _check_epsilon(value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"ε must be a positive number, got {value!r}")


def _check_delta(value: float) -> None:
    if not (isinstance(value, (int, float)) and 0 < value < 1):
        raise ValueError(f"δ must be in (0, 1), got {value!r}")
