"""One secure federated round against one plain round, on the same three domains and data.

Both rounds start from the same global weights (after one untimed warm-up round)
and train the same plan at the three hospitals at once; the secure round adds
sharing, sealing and one aggregation request per hospital. Approval is
done by in-process admin reviewers (the same rule checks as the CLI), so a human's
reading time is not measured. Prints the ratio of the best times (goal <= 1.2).

    .venv/bin/python bench/bench_federated_round.py --n 2400 --size 64 --epochs 2
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workload import training_workload_args  # noqa: E402  (bench/ is on sys.path)
from demos.federated import HOSPITALS, RESEARCHER, AdminApprovers, start_hospitals  # noqa: E402
from scientist import TrainingPlan  # noqa: E402
from scientist.federated import join, plain_round, secure_round  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = training_workload_args(__doc__.splitlines()[0], argv, n=2400)
    plan = TrainingPlan(model="small_cnn", epochs=args.epochs)
    plain_times, secure_times = [], []
    with tempfile.TemporaryDirectory(prefix="pneumosyft-bench-fed-") as workdir:
        domains = start_hospitals(Path(workdir), args.n, args.size)
        try:
            approver = AdminApprovers(domains)
            hospitals = [join(str(domains[name].researcher_file(RESEARCHER)))
                         for name in HOSPITALS]
            warm, _ = plain_round(hospitals, plan, {}, approver, 0)  # imports, caches: untimed
            for repeat in range(1, args.repeats + 1):
                _, plain = plain_round(hospitals, plan, warm, approver, repeat)
                _, secure = secure_round(hospitals, plan, warm, approver, repeat)
                plain_times.append(plain.seconds)
                secure_times.append(secure.seconds)
                phases = ", ".join(f"{name} {seconds:.2f} s"
                                   for name, seconds in secure.phases.items())
                print(f"  repeat {repeat}: plain {plain.seconds:.2f} s, "
                      f"secure {secure.seconds:.2f} s ({phases})", flush=True)
        finally:
            for domain in domains.values():
                domain.stop()
    best_plain, best_secure = min(plain_times), min(secure_times)
    print(f"one round, {len(HOSPITALS)} hospitals, {args.n} images at {args.size} px, "
          f"{args.epochs} local epoch(s) (best of {args.repeats}):")
    print(f"  plain federated round:  {best_plain:.2f} s")
    print(f"  secure federated round: {best_secure:.2f} s")
    print(f"secure / plain round ratio: {best_secure / best_plain:.3f} (goal <= 1.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
