"""A 20-round federated job on three domains against the same training in a plain loop.

The job is approved once per hospital (in-process admin reviewers, untimed), then runs
its rounds: each hospital trains 10 SGD steps from the global model in its sandbox and
seals its weights, each aggregates and tags its partial sum, each computes the next
global model itself. The baseline is the same training (same partitions, same config
and seeds, same validation, same fixed-point average and server momentum) in a plain
loop in this process (`demos/plain_loop.py`), hospitals one after the other with
torch's default threads; the domains train concurrently, one share of the cores each.
Prints the per-round overhead of the job beyond that training (goal <= 1.5 s).

    .venv/bin/python bench/bench_federated_job.py --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demos.federated import (HOSPITALS, MOMENTUM_PLAN, RESEARCHER, AdminApprovers,  # noqa: E402
                             start_hospitals)
from demos.plain_loop import hospital_partitions, plain_loop  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds of the job (default 20)")
    parser.add_argument("--n", type=int, default=2400, help="synthetic images in all")
    parser.add_argument("--size", type=int, default=28, metavar="PX", help="image side")
    args = parser.parse_args(argv)
    if args.rounds < 2 or args.n < 300:
        parser.error("--rounds must be at least 2 and --n at least 300")

    from common.strategies import make_strategy
    from datasets.xray import load_synthetic
    from scientist import TrainingPlan
    from scientist.federated import join
    from scientist.federated_job import FederatedJob

    plan = TrainingPlan(model="small_cnn", **MOMENTUM_PLAN)
    partitions = hospital_partitions(load_synthetic(n=args.n, size=args.size), len(HOSPITALS),
                                     skew=None)
    plain_loop(partitions, plan.config(), rounds=1, strategy=make_strategy("fedavgm"))  # warm
    started = time.perf_counter()
    _, plain_logs = plain_loop(partitions, plan.config(), rounds=args.rounds,
                               strategy=make_strategy("fedavgm", momentum=0.9))
    plain_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="pneumosyft-bench-job-") as workdir:
        domains = start_hospitals(Path(workdir), args.n, args.size,
                                  partitionings={"IID": None})
        try:
            hospitals = [join(str(domains[name].researcher_file(RESEARCHER)))
                         for name in HOSPITALS]
            job = FederatedJob.submit(hospitals, plan, rounds=args.rounds,
                                      strategy=make_strategy("fedavgm", momentum=0.9))
            job.approve(AdminApprovers(domains))
            started = time.perf_counter()
            _, job_logs = job.run(on_round=lambda _, log: print(
                f"  round {log.round}: {log.seconds:.2f} s (train and share "
                f"{log.phases['train and share']:.2f} s, aggregate "
                f"{log.phases['aggregate']:.2f} s)", flush=True))
            job_seconds = time.perf_counter() - started
        finally:
            for domain in domains.values():
                domain.stop()
    overhead = (job_seconds - plain_seconds) / args.rounds
    print(f"{args.rounds} rounds, {len(HOSPITALS)} hospitals, {args.n} images at {args.size} px, "
          f"{MOMENTUM_PLAN['local_steps']} SGD steps per round:")
    print(f"  plain loop in one process: {plain_seconds:.1f} s "
          f"({statistics.median(log.seconds for log in plain_logs):.2f} s a round, median)")
    print(f"  federated job, 3 domains:  {job_seconds:.1f} s "
          f"({statistics.median(log.seconds for log in job_logs):.2f} s a round, median)")
    print(f"job / plain loop: {job_seconds / plain_seconds:.2f}; overhead per round "
          f"{overhead:.2f} s (goal <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
