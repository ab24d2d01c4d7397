"""What every federated strategy provides (see `common.strategies`)."""

from __future__ import annotations

import numpy as np


class Strategy:
    """FedAvg's behaviour; subclasses change what hospitals train with or the server step.

    `next_global(current, average)`: `current` is the global model the round started
    from ({} in the first round: hospitals initialised it from the plan's seed),
    `average` the sample-weighted average of the models the hospitals returned.
    """

    name = "fedavg"
    needs_control = False  # SCAFFOLD: hospitals keep control variates (a federated job only)

    def config_problems(self, config: dict) -> list[str]:
        """Why this strategy cannot train with `config` (empty: it can)."""
        return []

    def client_config(self, config: dict) -> dict:
        """The training config each hospital receives this round."""
        return dict(config)

    def next_global(self, current: dict, average: dict) -> dict:
        """The next global model."""
        return dict(average)

    def describe(self) -> str:
        """One line for tables and plots, e.g. "fedadam (server lr 0.01)"."""
        return self.name

    def options(self) -> dict:
        """The keyword arguments that rebuild this strategy (`make_strategy(name, **options)`):
        what a federated job's request names, so every hospital runs the same server step."""
        return {}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The server state carried between rounds, as named arrays (none for FedAvg), so
        a hospital that computes the global model itself keeps it across restarts."""
        return {}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what `state_arrays` returned."""
        if arrays:
            raise ValueError(f"the {self.name} strategy keeps no state")


def float_names(weights: dict) -> list[str]:
    """The floating-point entries of a state dict (integer buffers are only averaged)."""
    return [name for name, value in weights.items() if np.asarray(value).dtype.kind == "f"]
