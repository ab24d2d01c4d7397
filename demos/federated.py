"""`make demo-federated`: three hospital domains, a federated job per seed, five seeds.

Each hospital holds one partition (IID, then label-skewed) of a synthetic X-ray set.
For each partitioning and each of five seeds, the researcher runs one federated job
(approved once per hospital: `scientist.federated_job`) of the demo's strategy over
short rounds of equal local SGD steps, with secure aggregation, and keeps the model
the hospitals' held-out images validated best; then one DP-SGD job on the IID
partitions. Then, in two worker processes: the same training in a plain loop
(`demos/plain_loop.py`: what the researcher would get if she saw every hospital's
weights), centralised training and the best hospital alone. The table gives the mean and the minimum over the
seeds, and the goals are checked on the minimum: IID within 2 AUC points of
centralised, label-skewed at least 5 points above the best hospital alone, secure
within 1 point of plain.

The hospital admins are played by reviewers that apply the same approval rules as
`python -m domain_setup review approve`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from common.errors import PneumoSyftError
from demos.local_domain import (TRUSTED, LocalDomain, join_federation, start_domains,
                                threads_per_domain)

ACCOUNTS = Path(__file__).resolve().parent.parent / "policies" / "accounts.yaml"
RESEARCHER = "ada@pneumosyft-research.org"
HOSPITALS = ("St Mary", "Royal Infirmary", "County General")
PARTITIONINGS = {"IID": None, "label-skewed": 0.5}
DATASETS = {"IID": "xray", "label-skewed": "xray-skewed"}
DEFAULT_N = 2400
# rounds per partitioning: IID reaches centralised in about 25 rounds, label skew still
# climbs until about 55 (docs/federated_jobs.png)
DEFAULT_ROUNDS = {"IID": 30, "label-skewed": 60}


class AdminApprovers:
    """One in-process admin reviewer per hospital domain, approving compliant requests."""

    def __init__(self, domains: dict[str, LocalDomain]):
        from domain_setup.admin import AdminClient

        self.reviewers = {name: AdminClient(domain.state).reviewer
                          for name, domain in domains.items()}

    def __call__(self, hospital, submission) -> None:
        self.reviewers[hospital.name].approve(submission.request_id)


def hospital_names(count: int) -> tuple[str, ...]:
    """The demo's three hospitals, then "Hospital 4", "Hospital 5", ... up to `count`."""
    return HOSPITALS[:count] + tuple(f"Hospital {i}" for i in range(len(HOSPITALS) + 1,
                                                                    count + 1))


def start_hospitals(workdir: Path, n: int, size: int, names: tuple[str, ...] = HOSPITALS,
                    partitionings: dict | None = None,
                    policies: tuple[str, ...] = TRUSTED) -> dict[str, LocalDomain]:
    """Start one domain per name (at once); each uploads its partition of every
    partitioning (default: IID and label-skewed) of the same n synthetic images,
    applies the accounts; then all of them form one federation (`join_federation`).
    The domains run the demos' policy folder (no DP required) unless `policies` says
    otherwise (``()``: the shipped policies/)."""

    def prepare(index: int, domain: LocalDomain) -> None:
        for partitioning, skew in (partitionings or PARTITIONINGS).items():
            extra = ("--label-skew", str(skew)) if skew else ()
            domain.cli("upload", "synthetic", "--name", DATASETS[partitioning], "--n", str(n),
                       "--size", str(size), "--partition", f"{index + 1}/{len(names)}", *extra)
        domain.cli("accounts", "apply", str(ACCOUNTS))
        print(f"  {names[index]}: up at {domain.url}", flush=True)

    domains = start_domains([(name, workdir / f"hospital-{i}") for i, name in
                             enumerate(names, start=1)],
                            torch_threads=threads_per_domain(len(names)), prepare=prepare,
                            extra_args=policies)
    try:
        join_federation(domains)
    except BaseException:
        for domain in domains:
            domain.stop()
        raise
    return dict(zip(names, domains))


# The job's recipe: every hospital takes the same 10 plain SGD steps per round (not one
# pass over however many images it holds, which lets the largest, most skewed hospital
# pull the model its way), and the server carries momentum 0.9 across rounds (FedAvgM);
# 10 % of each hospital's images validate the model it receives, and the job keeps the
# model they rate best.
JOB_PLAN = {"optimiser": "sgd", "lr": 0.05, "local_steps": 10, "epochs": 20,
            "validation_fraction": 0.1}
MOMENTUM_PLAN = JOB_PLAN  # the benchmarks' name for the same recipe
STRATEGY = "fedavgm"
STRATEGY_OPTIONS = {"momentum": 0.9}
BASELINE_EPOCHS = 16  # centralised and alone: Adam 0.003, 16 epochs
SEEDS = 5


def job_label(secure: bool) -> str:
    return f"{STRATEGY} job, " + ("secure" if secure else "plain loop")


class ReferenceRuns:
    """The demo's training outside the domains (the data is synthetic, so the researcher
    may train on all of it here): centralised, each hospital alone and the plain loop,
    in worker processes with the sandboxes' thread count (what keeps the plain loop
    bit-identical to a job's rounds). They run after the jobs, not beside them: a
    round waits for its slowest hospital, and a busy core made the jobs 40 to 70 %
    slower. Centralised training does not depend on the partitioning, so each seed's
    runs once."""

    def __init__(self, n: int, size: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(REFERENCE_WORKERS,
                                        mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_reference_worker, initargs=(n, size))
        self.centralised: dict[int, Future] = {}

    def queue(self, skew: float | None, seed: int, config: dict, rounds: int) -> dict:
        """Futures of one seed's reference runs on one partitioning: "centralised",
        "best hospital alone" and the job's plain loop (held-out metrics each)."""
        if seed not in self.centralised:
            self.centralised[seed] = self.pool.submit(_centralised, seed)
        return {"centralised": self.centralised[seed],
                "best hospital alone": self.pool.submit(_best_alone, skew, seed),
                job_label(False): self.pool.submit(_plain_reference, skew, config, rounds)}

    def close(self) -> None:
        """Drop the runs not started; the worker ends with its run or with the demo."""
        self.pool.shutdown(wait=False, cancel_futures=True)


_REFERENCE_DATA: dict = {}  # a worker's synthetic data set ("data")
_PARTITIONS: dict = {}  # a worker's hospital partitions by label skew
REFERENCE_WORKERS = 2  # one per core of a 2-core machine: the domains are stopped by then


def _reference_worker(n: int, size: int) -> None:
    import ctypes
    import signal as signals

    import torch

    from datasets.xray import load_synthetic

    # the worker dies with the demo, however the demo ends (PR_SET_PDEATHSIG = 1)
    ctypes.CDLL(None, use_errno=True).prctl(1, signals.SIGKILL)
    torch.set_num_threads(threads_per_domain(len(HOSPITALS)))
    _REFERENCE_DATA["data"] = load_synthetic(n=n, size=size)


def held_out(data, weights: dict) -> dict:
    """Held-out metrics of `weights` (a small_cnn) on `data`'s test split."""
    from common.training import evaluate

    return evaluate(data.test.images, data.test.labels, weights, model="small_cnn")


def _held_out(weights: dict) -> dict:
    return held_out(_REFERENCE_DATA["data"], weights)


def _partitions(skew: float | None) -> list:
    """This worker's hospital partitions of one partitioning (computed once)."""
    from demos.plain_loop import hospital_partitions

    if skew not in _PARTITIONS:
        _PARTITIONS[skew] = hospital_partitions(_REFERENCE_DATA["data"], len(HOSPITALS), skew)
    return _PARTITIONS[skew]


def _baseline_trained(images, labels, seed: int) -> dict:
    """Held-out metrics of the demo's baseline recipe (Adam 0.003, BASELINE_EPOCHS)."""
    from common.training import train
    from scientist import TrainingPlan

    config = TrainingPlan(model="small_cnn", epochs=BASELINE_EPOCHS, lr=3e-3, seed=seed).config()
    return _held_out(train(images, labels, **config)["weights"])


def _centralised(seed: int) -> dict:
    train = _REFERENCE_DATA["data"].train
    return _baseline_trained(train.images, train.labels, seed)


def _best_alone(skew: float | None, seed: int) -> dict:
    alone = [_baseline_trained(p.images, p.labels, seed) for p in _partitions(skew)]
    best = max(range(len(alone)), key=lambda i: alone[i]["auc"])
    return dict(alone[best], hospital=HOSPITALS[best])


def _plain_reference(skew: float | None, config: dict, rounds: int) -> dict:
    from demos.plain_loop import plain_loop

    weights, _ = plain_loop(_partitions(skew), config, rounds=rounds, strategy=demo_strategy())
    return _held_out(weights)


def demo_strategy() -> Any:
    """A fresh instance of the demo's strategy (it keeps server state)."""
    from common.strategies import make_strategy

    return make_strategy(STRATEGY, **STRATEGY_OPTIONS)


def job_plan(seed: int) -> tuple[Any, dict]:
    """The seed's training plan and the config its job's hospitals train with."""
    from scientist import TrainingPlan

    plan = TrainingPlan(model="small_cnn", seed=seed, **JOB_PLAN)
    return plan, demo_strategy().client_config(plan.config())


def secure_job(hospitals, approver, data, seed: int, rounds: int) -> tuple[dict, list]:
    """One secure job on the domains: held-out metrics of the model it kept, and the
    global model after each round (for the plot, evaluated later by the workers)."""
    from scientist.federated_job import FederatedJob

    plan, _ = job_plan(seed)
    job = FederatedJob.submit(hospitals, plan, rounds=rounds, strategy=demo_strategy())
    job.approve(approver)
    per_round: list[dict] = []
    kept, _ = job.run(on_round=lambda weights, log: per_round.append(dict(weights)))
    return held_out(data, kept), per_round


def dp_job(hospitals, approver, data, epsilon: float, rounds: int) -> dict:
    """One secure FedAvg job with DP-SGD at every hospital (ε per round), seed 0."""
    from scientist import TrainingPlan
    from scientist.federated_job import FederatedJob
    from scientist.privacy import private_training

    job = FederatedJob.submit(hospitals, TrainingPlan(model="small_cnn", epochs=2, lr=3e-3),
                              rounds=rounds, privacy=private_training(epsilon))
    job.approve(approver)
    weights, logs = job.run()
    for hospital, spent in logs[-1].privacy.items():
        print(f"  {hospital}: ε spent on {spent['dataset']} {spent['spent']:.2f} (composed; "
              f"sum {spent['spent_sum']:.2f}), {spent['left']:.2f} left", flush=True)
    return held_out(data, weights)


def run(n: int, size: int, rounds: dict[str, int], seeds: int, workdir: Path, plot: Path | None,
        epsilon: float | None = None, dp_rounds: int = 4) -> dict:
    """The demo (module docstring); returns {(partitioning, model): [metrics per seed]}."""
    from datasets.xray import load_synthetic
    from scientist.federated import join

    data = load_synthetic(n=n, size=size)
    print("== [admins] start three hospital domains", flush=True)
    began = time.perf_counter()
    domains = start_hospitals(workdir, n, size)
    secure: dict = {}   # (partitioning, seed) -> the secure job's held-out metrics
    models: dict = {}   # (partitioning, seed) -> the job's global model after each round
    private: dict = {}  # partitioning -> {row: [metrics]} of the DP job
    try:
        approver = AdminApprovers(domains)
        files = {name: d.researcher_file(RESEARCHER, workdir / f"ada-{i}.json")
                 for i, (name, d) in enumerate(domains.items())}
        for partitioning, skew in PARTITIONINGS.items():
            print(f"\n== [researcher] {partitioning} partitions: {seeds} seeds x "
                  f"{rounds[partitioning]} rounds of {STRATEGY}", flush=True)
            hospitals = [join(str(files[name]), dataset=DATASETS[partitioning])
                         for name in HOSPITALS]
            for seed in range(seeds):
                started = time.perf_counter()
                secure[(partitioning, seed)], models[(partitioning, seed)] = secure_job(
                    hospitals, approver, data, seed, rounds[partitioning])
                print(f"  seed {seed}: {job_label(True)} "
                      f"{secure[(partitioning, seed)]['auc']:.3f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
            if epsilon and skew is None:
                print(f"  secure FedAvg with DP-SGD (ε {epsilon:g} a round, {dp_rounds} rounds)",
                      flush=True)
                private[partitioning] = {
                    f"FedAvg job, secure + DP (ε {epsilon:g}/round)":
                        [dp_job(hospitals, approver, data, epsilon, dp_rounds)]}
    finally:
        for domain in domains.values():
            domain.stop()
    print(f"  the domains' part: {time.perf_counter() - began:.0f} s", flush=True)
    began = time.perf_counter()
    results, curves = reference_runs(n, size, rounds, seeds, secure, models, private)
    print(f"  the reference runs: {time.perf_counter() - began:.0f} s", flush=True)
    print_table(results, n, size, rounds, seeds)
    print_goals(results)
    if plot:
        plot_curves(curves, results, plot)
    return results


def reference_runs(n: int, size: int, rounds: dict[str, int], seeds: int, secure: dict,
                   models: dict, private: dict) -> tuple[dict, dict]:
    """After the jobs (which then had the cores to themselves): the reference runs and the
    held-out AUC of every job's global model per round, in the workers; the table's rows
    {(partitioning, model): [metrics per seed]} and the plot's curves."""
    print("\n== [researcher] centralised, best hospital alone and the plain loop, in "
          f"{REFERENCE_WORKERS} worker processes", flush=True)
    references = ReferenceRuns(n, size)
    results: dict = {}
    try:
        queued = {(p, seed): references.queue(skew, seed, job_plan(seed)[1], rounds[p])
                  for p, skew in PARTITIONINGS.items() for seed in range(seeds)}
        curves = {key: [references.pool.submit(_held_out, weights) for weights in per_round]
                  for key, per_round in models.items()}
        for partitioning in PARTITIONINGS:
            for seed in range(seeds):
                found = {model: future.result()
                         for model, future in queued[(partitioning, seed)].items()}
                found[job_label(True)] = secure[(partitioning, seed)]
                for model in ("centralised", "best hospital alone", job_label(True),
                              job_label(False)):
                    results.setdefault((partitioning, model), []).append(found[model])
                print(f"  {partitioning}, seed {seed}: " + ", ".join(
                    f"{model} {found[model]['auc']:.3f}" for model in
                    ("centralised", "best hospital alone", job_label(False))), flush=True)
            for model, metrics in private.get(partitioning, {}).items():
                results[(partitioning, model)] = metrics
        curves = {key: [future.result()["auc"] for future in futures]
                  for key, futures in curves.items()}
    finally:
        references.close()
    return results, curves


def summary(values: list[float]) -> tuple[float, float]:
    """(mean, minimum)."""
    return sum(values) / len(values), min(values)


def print_table(results: dict, n: int, size: int, rounds: dict[str, int], seeds: int) -> None:
    print(f"\n== held-out AUC (SYNTHETIC chest X-rays: {n} images at {size} px, "
          f"{len(HOSPITALS)} hospitals; {seeds} seeds; jobs of " + " and ".join(
              f"{r} rounds ({p})" for p, r in rounds.items()) + "; centralised "
          f"and alone: Adam, {BASELINE_EPOCHS} epochs)")
    print(f"{'partitions':<14}{'model':<44}{'mean':>7}{'min':>7}{'seeds':>6}")
    for (partitioning, model), metrics in results.items():
        mean, low = summary([m["auc"] for m in metrics])
        print(f"{partitioning:<14}{model:<44}{mean:>7.3f}{low:>7.3f}{len(metrics):>6}")


def goals(results: dict) -> list[tuple[str, float, bool]]:
    """(what, AUC points, met) for the three goals, on the minimum over seeds of each row,
    and, stricter, on the worst seed of the paired differences."""
    def aucs(partitioning: str, model: str) -> list[float]:
        return [m["auc"] for m in results[(partitioning, model)]]

    secure, plain = job_label(True), job_label(False)
    central, alone = aucs("IID", "centralised"), aucs("label-skewed", "best hospital alone")
    iid, skewed = aucs("IID", secure), aucs("label-skewed", secure)
    iid_gap = 100 * (min(central) - min(iid))
    skew_gain = 100 * (min(skewed) - min(alone))
    worst_gap = 100 * max(c - f for c, f in zip(central, iid))
    worst_gain = 100 * min(f - a for f, a in zip(skewed, alone))
    apart = 100 * max(abs(a - b) for p in PARTITIONINGS
                      for a, b in zip(aucs(p, secure), aucs(p, plain)))
    return [("IID: secure job below centralised (minima over seeds), goal <= 2", iid_gap,
             iid_gap <= 2),
            ("  worst seed, paired", worst_gap, worst_gap <= 2),
            ("label-skewed: secure job above the best hospital alone (minima over seeds), "
             "goal >= 5", skew_gain, skew_gain >= 5),
            ("  worst seed, paired", worst_gain, worst_gain >= 5),
            ("secure vs plain loop, same seed, at most (goal <= 1)", apart, apart <= 1)]


def print_goals(results: dict) -> None:
    for what, points, met in goals(results):
        print(f"{what}: {points:.1f} AUC points {'(met)' if met else '(MISSED)'}")


def plot_curves(curves: dict, results: dict, path: Path) -> None:
    """Held-out AUC per round of each seed's secure job, one panel per partitioning, with
    the mean centralised and best-alone AUC as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PARTITIONINGS), figsize=(11, 4), sharey=True)
    for ax, partitioning in zip(axes, PARTITIONINGS):
        for (where, seed), per_round in curves.items():
            if where == partitioning:
                ax.plot(range(1, len(per_round) + 1), per_round, linewidth=1,
                        label=f"{STRATEGY} job, seed {seed}")
        for model, style in (("centralised", "--"), ("best hospital alone", ":")):
            mean, _ = summary([m["auc"] for m in results[(partitioning, model)]])
            ax.axhline(mean, color="black", linestyle=style, label=f"{model} (mean)")
        ax.set_title(f"{partitioning} partitions")
        ax.set_xlabel("round")
    axes[0].set_ylabel("held-out AUC of the global model")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Federated jobs on synthetic X-rays ({len(HOSPITALS)} hospitals, secure)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=DEFAULT_N,
                        help=f"synthetic images in all (default {DEFAULT_N})")
    parser.add_argument("--size", type=int, default=28, metavar="PX",
                        help="image side in pixels (default 28)")
    parser.add_argument("--rounds", type=int,
                        help="rounds of every job (default: " + ", ".join(
                            f"{r} {p}" for p, r in DEFAULT_ROUNDS.items()) + ")")
    parser.add_argument("--seeds", type=int, default=SEEDS,
                        help=f"seeds per partitioning (default {SEEDS})")
    parser.add_argument("--plot", type=Path,
                        help="save held-out AUC per round per seed as a PNG")
    parser.add_argument("--epsilon", type=float, default=1.0,
                        help="also run one secure FedAvg job with DP-SGD on the IID partitions, "
                             "this ε per round (default 1; 0 skips it)")
    args = parser.parse_args(argv)
    for option in ("n", "rounds", "seeds"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1")
    if args.epsilon < 0:
        parser.error("--epsilon must be positive (or 0 to skip the DP job)")
    started = time.perf_counter()
    # a `kill` ends the demo as Ctrl-C does: its domains and worker are stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with tempfile.TemporaryDirectory(prefix="pneumosyft-federated-") as workdir:
            rounds = {p: args.rounds for p in PARTITIONINGS} if args.rounds else DEFAULT_ROUNDS
            run(args.n, args.size, rounds, args.seeds, Path(workdir), args.plot,
                epsilon=args.epsilon or None)
    except PneumoSyftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
