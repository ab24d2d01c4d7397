"""FedProx (Li et al., 2020): each hospital's loss adds (mu/2)·‖w − w_global‖², which
keeps local models near the global one when partitions differ; the server averages."""

from __future__ import annotations

from common.strategies.base import Strategy


class FedProx(Strategy):
    """FedAvg with a proximal term of strength `mu` in every hospital's training."""

    name = "fedprox"

    def __init__(self, mu: float = 0.01):
        if not mu > 0:
            raise ValueError(f"FedProx needs mu > 0, got {mu!r}")
        self.mu = float(mu)

    def client_config(self, config: dict) -> dict:
        return dict(config, proximal_mu=self.mu)

    def describe(self) -> str:
        return f"fedprox (mu {self.mu:g})"

    def options(self) -> dict:
        return {"mu": self.mu}
