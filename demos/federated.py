"""`make demo-federated`: three hospital domains, plain and secure federated averaging.

Each hospital holds one partition (IID, then label-skewed) of a synthetic X-ray
set. The researcher trains a small CNN with plain federated averaging (the
researcher sees every hospital's weights) and with secure aggregation (weights
leave hospitals only as sealed additive shares), and compares both with
centralised training and with each hospital alone, on held-out images.

The hospital admins are played by reviewers that apply the same approval rules
as `python -m domain_setup review approve`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common.errors import PneumoSyftError
from demos.local_domain import LocalDomain, threads_per_domain

ACCOUNTS = Path(__file__).resolve().parent.parent / "policies" / "accounts.yaml"
RESEARCHER = "ada@pneumosyft-research.org"
HOSPITALS = ("St Mary", "Royal Infirmary", "County General")
PARTITIONINGS = {"IID": None, "label-skewed": 0.5}
DATASETS = {"IID": "xray", "label-skewed": "xray-skewed"}


class AdminApprovers:
    """One in-process admin reviewer per hospital domain, approving compliant requests."""

    def __init__(self, domains: dict[str, LocalDomain]):
        from domain_setup.admin import AdminClient

        self.reviewers = {name: AdminClient(domain.state).reviewer
                          for name, domain in domains.items()}

    def __call__(self, hospital, submission) -> None:
        self.reviewers[hospital.name].approve(submission.request_id)


def start_hospitals(workdir: Path, n: int, size: int) -> dict[str, LocalDomain]:
    """Start the three domains; each uploads its IID and its label-skewed partition."""
    domains: dict[str, LocalDomain] = {}
    try:
        for i, name in enumerate(HOSPITALS, start=1):
            domain = LocalDomain.start_new(name, workdir / f"hospital-{i}",
                                           torch_threads=threads_per_domain(len(HOSPITALS)))
            domains[name] = domain
            for partitioning, skew in PARTITIONINGS.items():
                extra = ("--label-skew", str(skew)) if skew else ()
                domain.cli("upload", "synthetic", "--name", DATASETS[partitioning], "--n", str(n),
                           "--size", str(size), "--partition", f"{i}/{len(HOSPITALS)}", *extra)
            domain.cli("accounts", "apply", str(ACCOUNTS))
            domain.cli("federation", "enable")
            print(f"  {name}: up at {domain.url}", flush=True)
    except BaseException:
        for domain in domains.values():
            domain.stop()
        raise
    return domains


def local_reference(data, plan, skew, epochs_total: int) -> dict:
    """Centralised training and each hospital alone (the demo's data is synthetic)."""
    from common.training import evaluate, train
    from domain_setup.admin.upload import take_partition

    config = dict(plan.config(), epochs=epochs_total)
    results = {"centralised": evaluate(data.test.images, data.test.labels,
                                       train(data.train.images, data.train.labels, **config)["weights"],
                                       model=plan.model)}
    for i, name in enumerate(HOSPITALS):
        part = take_partition(data.train, (i, len(HOSPITALS)), skew, seed=0)
        weights = train(part.images, part.labels, **config)["weights"]
        results[f"{name} alone"] = evaluate(data.test.images, data.test.labels, weights,
                                            model=plan.model)
    return results


def run(n: int, size: int, rounds: int, epochs: int, workdir: Path, plot: Path | None,
        epsilon: float | None = None) -> list:
    from common.training import evaluate
    from datasets.xray import load_synthetic
    from scientist import TrainingPlan
    from scientist.federated import join, run_rounds
    from scientist.privacy import private_training

    plan = TrainingPlan(model="small_cnn", epochs=epochs)
    data = load_synthetic(n=n, size=size)
    print("== [admins] start three hospital domains", flush=True)
    domains = start_hospitals(workdir, n, size)
    table, curves = [], {}
    try:
        approver = AdminApprovers(domains)
        files = {name: d.researcher_file(RESEARCHER, workdir / f"ada-{i}.json")
                 for i, (name, d) in enumerate(domains.items())}
        for partitioning, skew in PARTITIONINGS.items():
            print(f"\n== [researcher] {partitioning} partitions", flush=True)
            hospitals = [join(str(files[name]), dataset=DATASETS[partitioning]) for name in HOSPITALS]
            for name, result in local_reference(data, plan, skew, rounds * epochs).items():
                table.append((partitioning, name, result))
            firsts, finals = {}, {}
            variants = [(False, None), (True, None)] + ([(True, epsilon)] if epsilon else [])
            for secure, per_round in variants:
                label = ("secure FedAvg" if secure else "plain FedAvg") + (
                    f" + DP (ε {per_round:g}/round)" if per_round else "")
                metrics_per_round = []

                def on_round(weights, log, label=label, metrics_per_round=metrics_per_round):
                    firsts.setdefault(label, weights)
                    metrics = evaluate(data.test.images, data.test.labels, weights, model=plan.model)
                    metrics_per_round.append(metrics)
                    print(f"  {label} round {log.round}: accuracy {metrics['accuracy']:.3f}, "
                          f"AUC {metrics['auc']:.3f} ({log.seconds:.1f} s)", flush=True)

                weights, logs = run_rounds(
                    hospitals, plan, rounds=rounds, secure=secure, approver=approver,
                    on_round=on_round,
                    privacy=private_training(per_round) if per_round else None)
                for hospital, spent in logs[-1].privacy.items():
                    print(f"  {hospital}: ε spent on {spent['dataset']} {spent['spent']:.2f} "
                          f"(composed; sum {spent['spent_sum']:.2f}), {spent['left']:.2f} "
                          f"left, δ {spent['delta']:g}", flush=True)
                if per_round:
                    continue  # the DP model is not the one compared with plain FedAvg
                finals[label] = weights
                curves[(partitioning, label)] = metrics_per_round
                table.append((partitioning, label, metrics_per_round[-1]))
            print(f"  secure vs plain FedAvg, largest weight difference: "
                  f"{largest_difference(firsts):.2e} after round 1 (same starting model), "
                  f"{largest_difference(finals):.2e} after round {rounds}")
    finally:
        for domain in domains.values():
            domain.stop()
    print_table(table, n, size, rounds, epochs)
    if plot:
        plot_curves(curves, plot)
    return table


def largest_difference(weights_by_label: dict) -> float:
    """Largest absolute difference of one weight between secure and plain FedAvg.

    After round 1 both start from the same model, so this is the aggregation error alone;
    later rounds train from global models that differ by it, and the gap grows.
    """
    secure, plain = weights_by_label["secure FedAvg"], weights_by_label["plain FedAvg"]
    return max(float(np.max(np.abs(secure[name] - plain[name]))) for name in plain)


def print_table(table: list, n: int, size: int, rounds: int, epochs: int) -> None:
    print(f"\n== held-out results (SYNTHETIC chest X-rays: {n} images at {size} px, "
          f"{len(HOSPITALS)} hospitals, {rounds} rounds x {epochs} epoch(s))")
    print(f"{'partitions':<14}{'model':<24}{'accuracy':>9}{'AUC':>8}")
    for partitioning, name, metrics in table:
        print(f"{partitioning:<14}{name:<24}{metrics['accuracy']:>9.3f}{metrics['auc']:>8.3f}")


def plot_curves(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("accuracy", "auc")):
        for (partitioning, label), per_round in curves.items():
            ax.plot(range(1, len(per_round) + 1), [m[metric] for m in per_round], marker="o",
                    linestyle="--" if "plain" in label else "-", label=f"{label}, {partitioning}")
        ax.set_xlabel("round")
        ax.set_ylabel(f"held-out {'AUC' if metric == 'auc' else metric}")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend()
    fig.suptitle("Federated averaging on synthetic X-rays (3 hospitals)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2400, help="synthetic images in all (default 2400)")
    parser.add_argument("--size", type=int, default=64, metavar="PX",
                        help="image side in pixels (default 64)")
    parser.add_argument("--rounds", type=int, default=5, help="federated rounds (default 5)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="local epochs per round (default 2); baselines train rounds x epochs")
    parser.add_argument("--plot", type=Path, help="save held-out accuracy and AUC per round as a PNG")
    parser.add_argument("--epsilon", type=float, default=1.0,
                        help="also run secure FedAvg with DP-SGD inside each hospital, this ε "
                             "per round (default 1; 0 skips it)")
    args = parser.parse_args(argv)
    for option in ("n", "rounds", "epochs"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1")
    if args.epsilon < 0:
        parser.error("--epsilon must be positive (or 0 to skip the DP run)")
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="pneumosyft-federated-") as workdir:
            run(args.n, args.size, args.rounds, args.epochs, Path(workdir), args.plot,
                epsilon=args.epsilon or None)
    except PneumoSyftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
