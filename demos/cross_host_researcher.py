"""The researcher's notebook on a host of its own: one secure federated round over the
hospitals whose connection files are given, then a DP evaluation of the averaged model at
each; prints one JSON line of what came back (and how long the round took).

    python -m demos.cross_host_researcher [--rounds N] CONNECTION_FILE [CONNECTION_FILE ...]

(demos/federation_on_hosts.py runs it on the researcher's host.)

Approval is the hospital admins' (their `review auto --approve-compliant --watch`): this
side only waits for it.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scientist.federated import at_every_hospital, join, secure_round  # noqa: E402
from scientist.plans import TrainingPlan  # noqa: E402
from scientist.privacy import evaluate_private_xray_plan, private_evaluation  # noqa: E402
from scientist.submission import (run_approved, split_assets, submit_plan,  # noqa: E402
                                  wait_for_approval)


def admins_approve(hospital, submission) -> None:
    wait_for_approval(hospital.client, submission, poll_seconds=0.5, progress=False)


def evaluate(hospital, weights, plan):
    client = hospital.client
    submission = submit_plan(client, evaluate_private_xray_plan,
                             inputs=split_assets(client, hospital.dataset, "test"),
                             constants={"weights": weights, "config": plan.config(),
                                        "privacy": private_evaluation(1.0)},
                             reason="DP evaluation of the federated model, ε 1")
    admins_approve(hospital, submission)
    return run_approved(client, submission)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="secure rounds (default 1)")
    parser.add_argument("connection_files", nargs="+")
    args = parser.parse_args()
    hospitals = [join(path) for path in args.connection_files]
    plan = TrainingPlan(epochs=1, batch_size=32)
    average, times = {}, []
    for number in range(1, args.rounds + 1):
        started = time.perf_counter()
        average, log = secure_round(hospitals, plan, average, admins_approve, number)
        times.append(time.perf_counter() - started)
    evaluations = at_every_hospital(hospitals, lambda h: evaluate(h, average, plan))
    print(json.dumps({
        "urls": [h.url for h in hospitals], "round_seconds": times, "phases": log.phases,
        "n_samples": log.n_samples, "parameters": {k: list(v.shape) for k, v in average.items()},
        "evaluations": {h.name: {k: v for k, v in e.items() if k != "weights"}
                        for h, e in zip(hospitals, evaluations)}}, default=str))
