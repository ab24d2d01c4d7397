"""The same federated training as a job, in a plain loop in one process: the baseline that
`bench/bench_federated_job.py` times and the demo's "plain" reference.

Round r trains every hospital's partition from the global model with the round's config
(`common.federated_job.round_config`; SCAFFOLD with each hospital's control variate), averages the models in the fixed point a secure
round sums in (`scientist.federated.weighted_average`), and lets the strategy step; the
held-out validation each hospital reports in a job is computed here too, so the loop does
the work a job does, minus the domains.

    partitions = hospital_partitions(load_synthetic(n=2400, size=28), 3, skew=None)
    weights, logs = plain_loop(partitions, config, rounds=20, strategy=make_strategy("fedavgm"))
"""

from __future__ import annotations

import time
from typing import Any, Callable

from common.federated_job import round_config
from common.scaffold import scaffold_round, with_control
from common.strategies import Strategy
from common.training import train
from domain_setup.admin.upload import take_partition
from scientist.federated import BestValidated, RoundLog, weighted_average


def hospital_partitions(data: Any, count: int, skew: float | None) -> list[Any]:
    """The training images each of `count` hospitals holds, as `upload synthetic
    --partition i/count [--label-skew skew]` gives them (seed 0)."""
    return [take_partition(data.train, (i, count), skew, seed=0) for i in range(count)]


def plain_loop(partitions: list[Any], config: dict, *, rounds: int, strategy: Strategy,
               initial_weights: dict | None = None,
               on_round: Callable[[dict, RoundLog], None] | None = None
               ) -> tuple[dict, list[RoundLog]]:
    """`rounds` rounds over `partitions` in this process; the model the hospitals
    validated best (the last without validation) and each round's log."""
    weights, logs, best = dict(initial_weights or {}), [], BestValidated()
    controls: list[dict] = [{} for _ in partitions]  # SCAFFOLD: each hospital's own c_i
    for number in range(1, rounds + 1):
        log, started = RoundLog(round=number, secure=False), time.perf_counter()
        results = []
        for i, part in enumerate(partitions):
            if strategy.needs_control:
                out = scaffold_round(part.images, part.labels, weights or None,
                                     server_control=strategy.control,
                                     client_control=controls[i], **round_config(config, number))
                controls[i] = out["client_control"]
                out["weights"] = with_control(out["weights"], out["control_delta"])
            else:
                out = train(part.images, part.labels, **round_config(config, number),
                            initial_weights=weights or None)
            results.append(out)
        for i, result in enumerate(results):
            log.n_samples[f"hospital {i + 1}"] = result["n_samples"]
            if result.get("validation"):
                log.validation[f"hospital {i + 1}"] = result["validation"]
        best.offer(log, weights)
        average = weighted_average([(r["weights"], r["n_samples"]) for r in results])
        weights = strategy.next_global(weights, average)
        log.seconds = time.perf_counter() - started
        logs.append(log)
        if on_round:
            on_round(weights, log)
    return best.model(weights), logs
