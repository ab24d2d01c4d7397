"""PneumoSyft against Flower: the same model, partitions and rounds, plain and secure.

Both systems train `small_cnn` with the hospital's `train_xray_plan` (Adam, the same
TrainingPlan config and seed) on the same three partitions of the synthetic X-rays
(built by the upload's own `build_dataset`), from the same initial weights, for the
same rounds, each client with the torch threads a domain gets here, one process per
client on 127.0.0.1:

- PneumoSyft: three hospital domains (`demos.federated.start_hospitals`), rounds by
  `scientist.federated.run_rounds`, plain FedAvg and secure aggregation (additive
  shares sealed to each hospital), approvals by in-process admin reviewers;
- Flower (its own venv, bench/.flower-venv): the deployment engine, a SuperLink and one
  SuperNode per client (bench/flower_side.py), the app in bench/flower-app: FedAvg
  with Flower's default fit workflow, and with SecAggPlusWorkflow + secaggplus_mod.

A round's time is its wall time from the researcher's (server's) view; round 1 is an
untimed warm-up and the best of the timed rounds counts. Accuracy and AUC are of each
final model on the same held-out images, by `common.training.evaluate`. Goals: our plain
round <= 1.5 x Flower's; our secure overhead (secure/plain) <= Flower's SecAgg+ one.

    make bench-flower                       # creates bench/.flower-venv, then runs this
    .venv/bin/python bench/bench_vs_flower.py --n 2400 --size 64 --epochs 2 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from workload import training_workload_args  # noqa: E402  (bench/ is on sys.path)
from flower_side import FlowerDeployment  # noqa: E402
from demos.federated import (  # noqa: E402
    DATASETS,
    HOSPITALS,
    PARTITIONINGS,
    RESEARCHER,
    AdminApprovers,
    start_hospitals,
)
from demos.local_domain import threads_per_domain  # noqa: E402

BENCH = Path(__file__).resolve().parent
FLOWER_VENV = BENCH / ".flower-venv"
GOAL_PLAIN = 1.5


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.Namespace]:
    """This bench's own options, then the shared workload options (--repeats = timed
    rounds after the warm-up round)."""
    own = argparse.ArgumentParser(add_help=False, usage=argparse.SUPPRESS)
    own.add_argument("--partitions", choices=sorted(PARTITIONINGS), default="IID",
                     help="the demo's partitioning of the images among hospitals (default IID)")
    own.add_argument("--flower-venv", type=Path, default=FLOWER_VENV,
                     help="Flower's virtual environment (default bench/.flower-venv, "
                          "made by `make bench-flower`)")
    own.add_argument("--keep", type=Path, metavar="DIR",
                     help="keep the work directory (Flower's logs, partitions) in DIR")
    options, rest = own.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print("bench_vs_flower.py options (and --repeats: the rounds timed after one "
              "untimed warm-up round):\n" + own.format_help().split("\n", 1)[-1])
    workload = training_workload_args(__doc__.splitlines()[0], rest, n=2400)
    return options, workload


def versions(flower_python: Path) -> dict:
    """Package versions on both sides (Flower's from its own interpreter)."""
    import torch

    code = ("import json, flwr, numpy, torch; print(json.dumps({'flwr': flwr.__version__, "
            "'numpy': numpy.__version__, 'torch': torch.__version__}))")
    flower = json.loads(subprocess.run([str(flower_python), "-c", code], capture_output=True,
                                       text=True, check=True, timeout=120).stdout)
    return {"ours": {"numpy": np.__version__, "torch": torch.__version__}, "flower": flower}


def hospital_partitions(n: int, size: int, skew: float | None, folder: Path) -> list[Path]:
    """Each hospital's training partition, as its domain uploads it (`build_dataset` with
    the arguments `start_hospitals` gives `upload`), written for a Flower client."""
    from domain_setup.admin.upload import build_dataset

    paths = []
    for i, name in enumerate(HOSPITALS):
        dataset, _, _ = build_dataset("xray", "synthetic", size=size, n=n, seed=0,
                                      partition=(i, len(HOSPITALS)), label_skew=skew)
        assets = {asset.name: asset.data for asset in dataset.asset_list}
        path = folder / f"partition-{i + 1}.npz"
        np.savez(path, images=assets["train_images"], labels=assets["train_labels"])
        paths.append(path)
    return paths


def initial_weights(plan, size: int) -> dict:
    """The model `train` would build for this plan's seed: both systems start from it."""
    import torch

    from common.models import build_model
    from common.training import weights_to_numpy

    config = plan.config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        return weights_to_numpy(build_model(config["model"], image_size=size))


def run_ours(args, options, plan, init: dict, parts: list[Path], workdir: Path) -> dict:
    from scientist.federated import join, run_rounds
    from scientist.submission import split_assets

    rounds = args.repeats + 1
    results = {}
    print(f"== PneumoSyft: three hospital domains (load {load()})", flush=True)
    began = time.perf_counter()
    domains = start_hospitals(workdir, args.n, args.size)
    print(f"  domains up, data uploaded, in {time.perf_counter() - began:.0f} s", flush=True)
    try:
        approver = AdminApprovers(domains)
        hospitals = [join(str(domains[name].researcher_file(RESEARCHER)),
                          dataset=DATASETS[options.partitions]) for name in HOSPITALS]
        for hospital, part in zip(hospitals, parts):  # same shapes as the Flower client's data
            mock = split_assets(hospital.client, hospital.dataset, "train")["images"].mock
            with np.load(part) as data:
                if tuple(np.asarray(mock).shape) != data["images"].shape:
                    raise SystemExit(f"{hospital.name}: partition shapes differ: "
                                     f"{np.asarray(mock).shape} vs {data['images'].shape}")
        for secure in (False, True):
            started = time.perf_counter()
            weights, logs = run_rounds(hospitals, plan, rounds=rounds, secure=secure,
                                       approver=approver, initial_weights=init)
            results[secure] = {"round_seconds": [log.seconds for log in logs],
                               "weights": weights}
            print(f"  {'secure' if secure else 'plain '} rounds: "
                  f"{seconds_list(results[secure]['round_seconds'])} "
                  f"({time.perf_counter() - started:.0f} s, load {load()})", flush=True)
    finally:
        for domain in domains.values():
            domain.stop()
    return results


def run_flower(args, options, plan, init_path: Path, parts: list[Path], workdir: Path,
               max_weight: int) -> tuple[dict, dict]:
    rounds = args.repeats + 1
    results, breakdowns = {}, {}
    print(f"== Flower: a SuperLink and {len(parts)} SuperNodes on 127.0.0.1 "
          f"(load {load()})", flush=True)
    with FlowerDeployment(options.flower_venv, workdir, parts=parts,
                          torch_threads=threads_per_domain(len(HOSPITALS))) as flower:
        for secure in (False, True):
            started = time.perf_counter()
            result = flower.run({
                "secure": secure, "rounds": rounds, "plan": json.dumps(plan.config()),
                "num-clients": len(parts),
                # SecAgg+ for 3 clients: each private key in 3 shares (itself and both
                # others), any 2 rebuild it (so one client may drop out); the weight
                # bound is the largest partition (a client's sample count)
                "num-shares": len(parts), "reconstruction-threshold": len(parts) - 1,
                "max-weight": float(max_weight), "initial-weights": str(init_path)},
                timeout=1200)
            results[secure] = result
            breakdowns[secure] = flower.breakdown(result["run_id"], list(range(2, rounds + 1)))
            print(f"  {'secure' if secure else 'plain '} rounds: "
                  f"{seconds_list(result['round_seconds'])} "
                  f"({time.perf_counter() - started:.0f} s, load {load()})", flush=True)
    return results, breakdowns


def load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def seconds_list(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in values) + "] s (round 1 untimed)"


def timed(result: dict) -> float:
    """The best of the timed rounds (round 1 is the warm-up)."""
    return min(result["round_seconds"][1:])


def largest_difference(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[name].astype(np.float64) - b[name]))) for name in a)


def report(ours: dict, flower: dict, breakdowns: dict, metrics: dict, args, options,
           found: dict) -> None:
    rounds = args.repeats + 1
    print(f"\n== {rounds} rounds ({args.repeats} timed, best counts) x {args.epochs} local "
          f"epoch(s), {len(HOSPITALS)} clients, {options.partitions} partitions of "
          f"{args.n} SYNTHETIC X-rays at {args.size} px; "
          f"{threads_per_domain(len(HOSPITALS))} torch thread(s) per client")
    print(f"   PneumoSyft: torch {found['ours']['torch']}, numpy {found['ours']['numpy']}; "
          f"Flower {found['flower']['flwr']} (deployment engine): torch "
          f"{found['flower']['torch']}, numpy {found['flower']['numpy']}")
    header = (f"{'system':<26}| {'plain s/round':>13} | {'secure s/round':>14} | "
              f"{'secure/plain':>12} | {'accuracy':>15} | {'AUC':>13}")
    print(header)
    print("-" * len(header))
    systems = (("ours", "PneumoSyft (ours)", ours),
               ("flower", f"Flower {found['flower']['flwr']} (SecAgg+)", flower))
    for key, system, results in systems:
        plain, secure = timed(results[False]), timed(results[True])
        m_plain, m_secure = metrics[key][False], metrics[key][True]
        print(f"{system:<26}| {plain:>13.2f} | {secure:>14.2f} | {secure / plain:>12.2f} | "
              f"{m_plain['accuracy']:>6.3f} / {m_secure['accuracy']:.3f} | "
              f"{m_plain['auc']:>5.3f} / {m_secure['auc']:.3f}")
    print("(accuracy and AUC: plain / secure final model, on the same "
          f"{metrics['n_test']} held-out images)")
    plain_ratio = timed(ours[False]) / timed(flower[False])
    our_overhead = timed(ours[True]) / timed(ours[False])
    flower_overhead = timed(flower[True]) / timed(flower[False])
    print(f"\nours/Flower plain round ratio: {plain_ratio:.2f} (goal <= {GOAL_PLAIN}) "
          f"{'MET' if plain_ratio <= GOAL_PLAIN else 'NOT MET'}")
    print(f"secure overhead (secure/plain): ours {our_overhead:.2f}, Flower SecAgg+ "
          f"{flower_overhead:.2f} (goal: ours <= Flower's) "
          f"{'MET' if our_overhead <= flower_overhead else 'NOT MET'}")
    print(f"ours/Flower secure round ratio: {timed(ours[True]) / timed(flower[True]):.2f}")
    print("largest weight difference, ours vs Flower, final model: plain "
          f"{largest_difference(ours[False]['weights'], flower[False]['weights']):.1e}, "
          f"secure {largest_difference(ours[True]['weights'], flower[True]['weights']):.1e}")
    print("\nwhere a timed Flower round goes, per client (means of the clients' SuperNode logs):")
    for secure in (False, True):
        b, seconds = breakdowns[secure], timed(flower[secure])
        waiting = seconds - (b["launch"] + b["clientapp"] + b["transfer"])
        print(f"  {'SecAgg+' if secure else 'plain  '}: {seconds:.1f} s = {b['messages']:.0f} "
              f"message(s), each a new ClientApp process: launch {b['launch']:.1f} s "
              f"(SuperExec poll, new interpreter, Flower imports) + in the ClientApp "
              f"{b['clientapp']:.1f} s (of which train_xray_plan {b['train']:.1f} s; the rest "
              f"imports of torch and the app, data, SecAgg+ work) + transfer "
              f"{b['transfer']:.1f} s + polls and waits {waiting:.1f} s (SuperNode and "
              "ServerApp poll every 3 s)")


def main(argv: list[str] | None = None) -> int:
    options, args = parse_args(argv)
    flower_python = options.flower_venv / "bin" / "python"
    if not (options.flower_venv / "bin" / "flower-superlink").exists():
        print(f"error: no Flower in {options.flower_venv}: run `make bench-flower` "
              "(it creates the venv from bench/flower-requirements.txt)", file=sys.stderr)
        return 1
    from common.training import evaluate
    from datasets.xray import load_synthetic
    from scientist import TrainingPlan

    started = time.perf_counter()
    found = versions(flower_python)
    plan = TrainingPlan(model="small_cnn", epochs=args.epochs)
    test = load_synthetic(n=args.n, size=args.size).test  # the demo's held-out images
    with tempfile.TemporaryDirectory(prefix="pneumosyft-vs-flower-") as temp:
        workdir = options.keep or Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        parts = hospital_partitions(args.n, args.size, PARTITIONINGS[options.partitions],
                                    workdir)
        init = initial_weights(plan, args.size)
        init_path = workdir / "initial-weights.npz"
        np.savez(init_path, **init)
        sizes = [len(np.load(part)["labels"]) for part in parts]
        print(f"== partitions of {sizes} images built as the upload builds them "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        ours = run_ours(args, options, plan, init, parts, workdir / "pneumosyft")
        flower, breakdowns = run_flower(args, options, plan, init_path, parts,
                                        workdir / "flower", max(sizes))
    metrics = {"n_test": len(test.labels)}
    for system, results in (("ours", ours), ("flower", flower)):
        metrics[system] = {secure: evaluate(test.images, test.labels, result["weights"],
                                            model=plan.model)
                           for secure, result in results.items()}
    report(ours, flower, breakdowns, metrics, args, options, found)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
