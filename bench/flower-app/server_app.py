"""Flower's side of bench_vs_flower.py, the server: FedAvg rounds, plain or with SecAgg+.

Flower's own machinery throughout: `DefaultWorkflow` with Flower's default fit
workflow (plain) or `SecAggPlusWorkflow` (secure), and Flower's `FedAvg` strategy,
which only records when each round starts (`configure_fit`) and ends (`aggregate_fit`
returns the new global model): the wall time of a round from the server's view, the
same span that `scientist.federated` times for PneumoSyft. No evaluation runs inside
Flower; the final global model is written to `out` and evaluated by the bench with
`common.training.evaluate`, on the same held-out images as PneumoSyft's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp


class TimedFedAvg(FedAvg):
    """Flower's FedAvg, noting each round's start and end and keeping the last model."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.started: dict[int, float] = {}
        self.seconds: dict[int, float] = {}
        self.final = None

    def configure_fit(self, server_round, parameters, client_manager):
        self.started[server_round] = time.perf_counter()
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        if failures:
            raise RuntimeError(f"round {server_round}: {len(failures)} client(s) failed: "
                               f"{failures[0]!r}")
        aggregated = super().aggregate_fit(server_round, results, failures)
        self.seconds[server_round] = time.perf_counter() - self.started[server_round]
        self.final = aggregated[0]
        return aggregated


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    clients = int(config["num-clients"])
    with np.load(str(config["initial-weights"]), allow_pickle=False) as stored:
        names = list(stored.files)
        initial = [stored[name] for name in names]
    strategy = TimedFedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0,  # every client trains; none evaluates
        min_fit_clients=clients, min_evaluate_clients=0, min_available_clients=clients,
        initial_parameters=ndarrays_to_parameters(initial))
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=int(config["rounds"])),
                           strategy=strategy)
    if config["secure"]:
        fit_workflow = SecAggPlusWorkflow(
            num_shares=int(config["num-shares"]),
            reconstruction_threshold=int(config["reconstruction-threshold"]),
            max_weight=float(config["max-weight"]))
        workflow = DefaultWorkflow(fit_workflow=fit_workflow)
    else:
        workflow = DefaultWorkflow()
    workflow(grid, legacy)

    out = Path(str(config["out"]))
    final = parameters_to_ndarrays(strategy.final)
    np.savez(out.with_suffix(".npz"),
             **{name: value.astype(np.float32) for name, value in zip(names, final)})
    out.with_suffix(".json").write_text(json.dumps({
        "secure": bool(config["secure"]),
        "round_seconds": [strategy.seconds[r] for r in sorted(strategy.seconds)],
    }))
