"""SCAFFOLD's server step (Karimireddy et al., 2020): the model moves by the average of
the hospitals' steps, the server control c by the average of their Δc_i (`common.scaffold`).
Only a federated job runs it: each hospital keeps its own control variate between rounds."""

from __future__ import annotations

import numpy as np

from common.scaffold import split_control
from common.strategies.base import Strategy, float_names


class Scaffold(Strategy):
    """x ← x + η·(avg y − x); c ← c + avg Δc_i (η = 1: the average model)."""

    name = "scaffold"
    needs_control = True

    def __init__(self, server_lr: float = 1.0):
        if not server_lr > 0:
            raise ValueError(f"server_lr must be above 0, got {server_lr!r}")
        self.server_lr = float(server_lr)
        self.control: dict[str, np.ndarray] = {}  # the server control c

    def config_problems(self, config: dict) -> list[str]:
        if config.get("optimiser") != "sgd" or not config.get("local_steps"):
            return ["SCAFFOLD needs plain SGD (optimiser: sgd) and local_steps"]
        return []

    def next_global(self, current: dict, average: dict) -> dict:
        weights, delta = split_control(average)
        for name, value in delta.items():
            self.control[name] = self.control.get(name, 0.0) + np.asarray(value, np.float64)
        if not current or self.server_lr == 1.0:
            return dict(weights)
        stepped = dict(weights)
        for name in float_names(weights):
            base = np.asarray(current[name], np.float64)
            stepped[name] = (base + self.server_lr * (weights[name] - base)).astype(np.float32)
        return stepped

    def options(self) -> dict:
        return {"server_lr": self.server_lr}

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {f"c/{name}": value for name, value in self.control.items()}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.control = {key[2:]: np.array(value, np.float64) for key, value in arrays.items()}

    def describe(self) -> str:
        return "scaffold" + (f" (server lr {self.server_lr:g})" if self.server_lr != 1 else "")
