"""FedAvg (McMahan et al., 2017): the sample-weighted average is the next global model."""

from __future__ import annotations

from common.strategies.base import Strategy


class FedAvg(Strategy):
    """The average of the hospitals' models, weighted by their training images."""

    name = "fedavg"
