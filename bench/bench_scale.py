"""Round time against the number of hospitals: up to 10 live domains on this machine.

Starts `--max-hospitals` domains at once (each holds 1/max of the synthetic images, torch
threads capped per domain as in the demo), then for K = 2 .. max times one plain and
one secure round of the first K hospitals (after one untimed warm-up round), so the
work per hospital is fixed and K grows. Prints seconds per round, the secure/plain
ratio, and with --plot draws them.

    .venv/bin/python bench/bench_scale.py --n 6000 --size 28 --epochs 1 --plot docs/round_time_vs_hospitals.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demos.federated import RESEARCHER, AdminApprovers, hospital_names, start_hospitals  # noqa: E402
from scientist import TrainingPlan  # noqa: E402
from scientist.federated import join, plain_round, secure_round  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000, help="synthetic images in all (default 6000)")
    parser.add_argument("--size", type=int, default=28, metavar="PX", help="image side (default 28)")
    parser.add_argument("--epochs", type=int, default=1, help="local epochs (default 1)")
    parser.add_argument("--max-hospitals", type=int, default=10, help="largest federation (default 10)")
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 4, 6, 8, 10],
                        help="federation sizes to time (default 2 4 6 8 10)")
    parser.add_argument("--plot", type=Path, help="save round time against hospitals as a PNG")
    args = parser.parse_args(argv)
    if not 2 <= args.max_hospitals <= 16:
        parser.error("--max-hospitals must be from 2 to 16")
    if any(not 2 <= k <= args.max_hospitals for k in args.steps):
        parser.error("--steps must lie between 2 and --max-hospitals")
    if args.n < 50 * args.max_hospitals or args.epochs < 1:
        parser.error("--n must give every hospital at least 50 images; --epochs >= 1")
    return args


def plot(rows: list[tuple[int, float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ks = [k for k, _, _ in rows]
    ax.plot(ks, [p for _, p, _ in rows], marker="o", label="plain round")
    ax.plot(ks, [s for _, _, s in rows], marker="o", linestyle="--", label="secure round")
    ax.set_xlabel("hospitals in the federation (one domain each, same machine)")
    ax.set_ylabel("seconds per round")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("Round time against federation size (2 cores, 28 px)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    plan = TrainingPlan(model="small_cnn", epochs=args.epochs)
    names = hospital_names(args.max_hospitals)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pneumosyft-bench-scale-") as workdir:
        domains = start_hospitals(Path(workdir), args.n, args.size, names=names,
                                  partitionings={"IID": None})
        try:
            approver = AdminApprovers(domains)
            everyone = [join(str(domains[name].researcher_file(RESEARCHER))) for name in names]
            warm, _ = plain_round(everyone, plan, {}, approver, 0)  # imports, caches: untimed
            for k in sorted(set(args.steps)):
                hospitals = everyone[:k]
                _, plain = plain_round(hospitals, plan, warm, approver, 1)
                _, secure = secure_round(hospitals, plan, warm, approver, 1)
                rows.append((k, plain.seconds, secure.seconds))
                print(f"  {k:>2} hospitals: plain {plain.seconds:6.2f} s, secure "
                      f"{secure.seconds:6.2f} s ({secure.seconds / plain.seconds:.2f} x; "
                      f"aggregation {secure.phases['aggregate']:.2f} s)", flush=True)
        finally:
            for domain in domains.values():
                domain.stop()
    print(f"{args.n // args.max_hospitals} images per hospital at {args.size} px, "
          f"{args.epochs} local epoch(s); one domain per hospital on this machine")
    print(f"{'hospitals':>9} {'plain s':>8} {'secure s':>9} {'secure/plain':>13}")
    for k, p, s in rows:
        print(f"{k:>9} {p:>8.2f} {s:>9.2f} {s / p:>13.2f}")
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
