"""`make demo-federated`: three hospital domains, federated strategies plain and secure.

Each hospital holds one partition (IID, then label-skewed) of a synthetic X-ray
set. The researcher trains a small CNN with FedAvg (local Adam, a few long rounds)
and with server momentum (FedAvgM over many short rounds of equal local SGD steps
at every hospital, which label skew needs), plainly (the researcher sees every
hospital's weights) and with secure aggregation (weights leave hospitals only as
sealed seeded shares), with DP-SGD on top, and compares them with centralised training
and with each hospital alone on held-out images, against the goals: IID within 2
AUC points of centralised, label-skewed at least 5 points above the best hospital
alone, secure within 1 point of plain.

The hospital admins are played by reviewers that apply the same approval rules
as `python -m domain_setup review approve`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common.errors import PneumoSyftError
from demos.local_domain import (TRUSTED, LocalDomain, join_federation, start_domains,
                                threads_per_domain)

ACCOUNTS = Path(__file__).resolve().parent.parent / "policies" / "accounts.yaml"
RESEARCHER = "ada@pneumosyft-research.org"
HOSPITALS = ("St Mary", "Royal Infirmary", "County General")
PARTITIONINGS = {"IID": None, "label-skewed": 0.5}
DATASETS = {"IID": "xray", "label-skewed": "xray-skewed"}
DEFAULT_N = 2400


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


# FedAvgM's recipe: every hospital takes the same 10 plain SGD steps per round (not
# one pass over however many images it holds, which lets the largest, most skewed
# hospital pull the model its way), and the server carries momentum 0.9 across rounds.
MOMENTUM_PLAN = {"optimiser": "sgd", "lr": 0.05, "local_steps": 10, "epochs": 20,
                 "validation_fraction": 0.1}
MOMENTUM = "FedAvgM (10 SGD steps/round)"
FEDAVG = "FedAvg (Adam)"


def variants(epsilon: float | None, rounds: int, momentum_rounds: int) -> list[dict]:
    """What the demo runs on each partitioning: label, strategy, plan changes, rounds,
    secure, ε."""
    from common.strategies import FedAvg, FedAvgM

    runs = [{"label": FEDAVG, "strategy": FedAvg, "plan": {}, "rounds": rounds,
             "secure": False}]
    for secure in (False, True):
        runs.append({"label": MOMENTUM + (", secure" if secure else ""),
                     "strategy": lambda: FedAvgM(momentum=0.9), "plan": MOMENTUM_PLAN,
                     "rounds": momentum_rounds, "secure": secure})
    if epsilon:
        runs.append({"label": f"{FEDAVG}, secure + DP (ε {epsilon:g}/round)",
                     "strategy": FedAvg, "plan": {}, "rounds": rounds, "secure": True,
                     "epsilon": epsilon})
    return runs


def run(n: int, size: int, rounds: int, epochs: int, workdir: Path, plot: Path | None,
        epsilon: float | None = None, lr: float = 3e-3, momentum_rounds: int = 60) -> list:
    from dataclasses import replace

    from common.training import evaluate
    from datasets.xray import load_synthetic
    from scientist import TrainingPlan
    from scientist.federated import join, run_rounds
    from scientist.privacy import private_training

    plan = TrainingPlan(model="small_cnn", epochs=epochs, lr=lr)
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
            if skew is not None and epsilon:
                print("  (no DP run here: privacy.yaml releases nothing computed from fewer than "
                      "50 images, and the smallest skewed partition is smaller)", flush=True)
            hospitals = [join(str(files[name]), dataset=DATASETS[partitioning]) for name in HOSPITALS]
            for name, result in local_reference(data, plan, skew, rounds * epochs).items():
                table.append((partitioning, name, result))
            for variant in variants(epsilon if skew is None else None, rounds,
                                    momentum_rounds):
                label, per_round = variant["label"], []

                def on_round(weights, log, label=label, per_round=per_round):
                    metrics = evaluate(data.test.images, data.test.labels, weights, model=plan.model)
                    per_round.append(metrics)
                    validated = log.validation_summary()
                    seen = (f", hospitals' validation AUC of the model sent {validated['auc']:.3f}"
                            if validated and validated.get("auc") is not None else "")
                    print(f"  {label} round {log.round}: accuracy {metrics['accuracy']:.3f}, "
                          f"AUC {metrics['auc']:.3f} ({log.seconds:.1f} s{seen})", flush=True)

                _, logs = run_rounds(
                    hospitals, replace(plan, **variant["plan"]), rounds=variant["rounds"],
                    secure=variant["secure"], approver=approver, on_round=on_round,
                    strategy=variant["strategy"](),
                    privacy=private_training(variant["epsilon"]) if "epsilon" in variant else None)
                for hospital, spent in logs[-1].privacy.items():
                    print(f"  {hospital}: ε spent on {spent['dataset']} {spent['spent']:.2f} "
                          f"(composed; sum {spent['spent_sum']:.2f}), {spent['left']:.2f} "
                          f"left, δ {spent['delta']:g}", flush=True)
                curves[(partitioning, label)] = per_round
                table.append((partitioning, label, per_round[-1]))
    finally:
        for domain in domains.values():
            domain.stop()
    print_table(table, n, size, rounds, epochs, momentum_rounds)
    print_goals(table)
    if plot:
        plot_curves(curves, plot)
    return table


def print_goals(table: list) -> None:
    """The issue's goals, checked on the demo's own table for both plain strategies."""
    auc = {(p, name): m["auc"] for p, name, m in table}
    alone = max(v for (p, name), v in auc.items() if p == "label-skewed" and "alone" in name)
    for label in (FEDAVG, MOMENTUM):
        iid_gap = auc[("IID", "centralised")] - auc[("IID", label)]
        skew_gain = auc[("label-skewed", label)] - alone
        print(f"IID: {label} is {100 * iid_gap:.1f} AUC points below centralised (goal <= 2)")
        print(f"label-skewed: {label} is {100 * skew_gain:.1f} AUC points above the best "
              "hospital alone (goal >= 5)")
    secure_gap = max(abs(auc[(p, MOMENTUM)] - auc[(p, f"{MOMENTUM}, secure")])
                     for p in PARTITIONINGS)
    print(f"secure vs plain ({MOMENTUM}): {100 * secure_gap:.2f} AUC points apart at most "
          "(goal <= 1)")


def print_table(table: list, n: int, size: int, rounds: int, epochs: int,
                momentum_rounds: int) -> None:
    print(f"\n== held-out results (SYNTHETIC chest X-rays: {n} images at {size} px, "
          f"{len(HOSPITALS)} hospitals; Adam: {rounds} rounds x {epochs} epoch(s), "
          f"alone and centralised {rounds * epochs} epochs; FedAvgM: {momentum_rounds} "
          "rounds)")
    print(f"{'partitions':<14}{'model':<42}{'accuracy':>9}{'AUC':>8}")
    for partitioning, name, metrics in table:
        print(f"{partitioning:<14}{name:<42}{metrics['accuracy']:>9.3f}{metrics['auc']:>8.3f}")


def plot_curves(curves: dict, path: Path) -> None:
    """Held-out AUC per round, one line per strategy, one panel per partitioning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PARTITIONINGS), figsize=(11, 4), sharey=True)
    for ax, partitioning in zip(axes, PARTITIONINGS):
        for (where, label), per_round in curves.items():
            if where == partitioning:
                ax.plot(range(1, len(per_round) + 1), [m["auc"] for m in per_round],
                        marker="o" if len(per_round) <= 12 else None,
                        linestyle="--" if "secure" in label else "-", label=label)
        ax.set_title(f"{partitioning} partitions")
        ax.set_xlabel("round")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel("held-out AUC")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Federated strategies on synthetic X-rays ({len(HOSPITALS)} hospitals)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=DEFAULT_N,
                        help=f"synthetic images in all (default {DEFAULT_N})")
    parser.add_argument("--size", type=int, default=28, metavar="PX",
                        help="image side in pixels (default 28)")
    parser.add_argument("--rounds", type=int, default=8,
                        help="FedAvg (Adam) rounds (default 8)")
    parser.add_argument("--momentum-rounds", type=int, default=60,
                        help=f"{MOMENTUM} rounds (default 60)")
    parser.add_argument("--lr", type=float, default=3e-3,
                        help="local Adam learning rate (default 0.003)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="FedAvg (Adam) local epochs per round (default 2); baselines "
                             "train rounds x epochs")
    parser.add_argument("--plot", type=Path,
                        help="save held-out AUC per round per strategy as a PNG")
    parser.add_argument("--epsilon", type=float, default=1.0,
                        help="also run secure FedAvg with DP-SGD inside each hospital, this ε "
                             "per round (default 1; 0 skips it)")
    args = parser.parse_args(argv)
    for option in ("n", "rounds", "momentum_rounds", "epochs"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    if args.epsilon < 0:
        parser.error("--epsilon must be positive (or 0 to skip the DP run)")
    if not 0 < args.lr < 1:
        parser.error("--lr must be between 0 and 1")
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="pneumosyft-federated-") as workdir:
            run(args.n, args.size, args.rounds, args.epochs, Path(workdir), args.plot,
                epsilon=args.epsilon or None, lr=args.lr,
                momentum_rounds=args.momentum_rounds)
    except PneumoSyftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
