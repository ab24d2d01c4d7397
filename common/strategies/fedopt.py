"""Server-side optimisers (Reddi et al., 2021, "Adaptive Federated Optimization"): the
round's step Δ = average − current is a pseudo-gradient that the server feeds to
momentum (FedAvgM, Hsu et al., 2019) or Adam (FedAdam). Δ comes from the weighted
average alone, so secure aggregation still sums only a weighted sum of models."""

from __future__ import annotations

import numpy as np

from common.strategies.base import Strategy, float_names


class _ServerOptimiser(Strategy):
    """Turns each round's Δ into a server step; the first round adopts the average
    (there is no global model to step from before it)."""

    def __init__(self, server_lr: float):
        if not server_lr > 0:
            raise ValueError(f"server_lr must be above 0, got {server_lr!r}")
        self.server_lr = float(server_lr)
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def next_global(self, current: dict, average: dict) -> dict:
        if not current:
            return dict(average)
        updated = dict(average)  # integer buffers: as averaged
        for name in float_names(average):
            step = self._step(name, average[name].astype(np.float64)
                              - np.asarray(current[name], np.float64))
            updated[name] = (np.asarray(current[name], np.float64) + step).astype(np.float32)
        return updated

    def _step(self, name: str, delta: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Each slot's array per weight as "slot/name" (FedAdam's step counts as "t/name")."""
        arrays = {f"{slot}/{name}": value for slot, values in self.state.items()
                  for name, value in values.items()}
        arrays.update({f"t/{name}": np.asarray(t, np.int64)
                       for name, t in getattr(self, "steps", {}).items()})
        return arrays

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.state = {}
        for key, value in arrays.items():
            slot, _, name = key.partition("/")
            if slot == "t" and hasattr(self, "steps"):
                self.steps[name] = int(value)
            else:
                self.state.setdefault(slot, {})[name] = np.array(value, np.float64)

    def _slot(self, slot: str, name: str, like: np.ndarray) -> np.ndarray:
        return self.state.setdefault(slot, {}).setdefault(name, np.zeros_like(like))


class FedAvgM(_ServerOptimiser):
    """v ← β·v + Δ; w ← w + η·v (η = 1, β = 0 is FedAvg)."""

    name = "fedavgm"

    def __init__(self, server_lr: float = 1.0, momentum: float = 0.9):
        super().__init__(server_lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)

    def _step(self, name: str, delta: np.ndarray) -> np.ndarray:
        velocity = self._slot("v", name, delta)
        velocity *= self.momentum
        velocity += delta
        return self.server_lr * velocity

    def describe(self) -> str:
        return f"fedavgm (server lr {self.server_lr:g}, momentum {self.momentum:g})"

    def options(self) -> dict:
        return {"server_lr": self.server_lr, "momentum": self.momentum}


class FedAdam(_ServerOptimiser):
    """m ← β1·m + (1−β1)·Δ; v ← β2·v + (1−β2)·Δ²; w ← w + η·m̂/(√v̂ + τ), with
    Adam's bias correction (so the first steps are not damped)."""

    name = "fedadam"

    def __init__(self, server_lr: float = 0.01, beta_1: float = 0.9, beta_2: float = 0.99,
                 tau: float = 1e-3):
        super().__init__(server_lr)
        if not (0 <= beta_1 < 1 and 0 <= beta_2 < 1 and tau > 0):
            raise ValueError("FedAdam needs 0 <= beta_1, beta_2 < 1 and tau > 0")
        self.beta_1, self.beta_2, self.tau = float(beta_1), float(beta_2), float(tau)
        self.steps: dict[str, int] = {}

    def _step(self, name: str, delta: np.ndarray) -> np.ndarray:
        m, v = self._slot("m", name, delta), self._slot("v", name, delta)
        m *= self.beta_1
        m += (1 - self.beta_1) * delta
        v *= self.beta_2
        v += (1 - self.beta_2) * delta * delta
        t = self.steps[name] = self.steps.get(name, 0) + 1
        m_hat, v_hat = m / (1 - self.beta_1 ** t), v / (1 - self.beta_2 ** t)
        return self.server_lr * m_hat / (np.sqrt(v_hat) + self.tau)

    def describe(self) -> str:
        return f"fedadam (server lr {self.server_lr:g})"

    def options(self) -> dict:
        return {"server_lr": self.server_lr, "beta_1": self.beta_1, "beta_2": self.beta_2,
                "tau": self.tau}
