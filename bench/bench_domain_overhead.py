"""What the domain itself costs: the same training plan inside a domain and in plain PyTorch.

Starts a domain on a loopback port, uploads synthetic X-rays (upload rate in MB/s),
then, for each repetition, times

* in-domain: from the call of the approved plan to the weights in the researcher's
  hands (submission and approval excluded), and
* plain PyTorch: `common.training.train` on the very same tensors in this process,

and prints the ratio of the best times (goal <= 1.15).

    .venv/bin/python bench/bench_domain_overhead.py --n 3000 --size 64 --epochs 2
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workload import training_workload_args  # noqa: E402  (bench/ is on sys.path)
from common.training import train  # noqa: E402
from datasets.xray import load_synthetic  # noqa: E402
from demos.local_domain import LocalDomain  # noqa: E402
from scientist import TrainingPlan, connect  # noqa: E402
from scientist.plans import train_xray_plan  # noqa: E402
from scientist.submission import run_approved, split_assets, submit_plan  # noqa: E402

ACCOUNTS = Path(__file__).resolve().parent.parent / "policies" / "accounts.yaml"
RESEARCHER = "ada@pneumosyft-research.org"


def _upload_rate(output: str) -> str:
    for line in output.splitlines():
        if "MB/s" in line:
            return line.strip()
    return "(no rate printed)"


def main(argv: list[str] | None = None) -> int:
    args = training_workload_args(__doc__.splitlines()[0], argv, n=3000)

    plan = TrainingPlan(model="small_cnn", epochs=args.epochs)
    data = load_synthetic(n=args.n, size=args.size)  # the tensors the domain holds
    with tempfile.TemporaryDirectory(prefix="pneumosyft-bench-") as workdir:
        with LocalDomain.start_new("Bench General", Path(workdir) / "state") as domain:
            upload_output = domain.cli("upload", "synthetic", "--name", "xray", "--n",
                                       str(args.n), "--size", str(args.size))
            domain.cli("accounts", "apply", str(ACCOUNTS))
            client = connect(connection_file=domain.researcher_file(RESEARCHER))
            inputs = split_assets(client, "xray", "train")
            in_domain, plain = [], []
            for _ in range(args.repeats):
                submission = submit_plan(client, train_xray_plan, inputs=inputs,
                                         constants={"config": plan.config(),
                                                    "initial_weights": {}},
                                         reason="benchmark")
                domain.cli("review", "approve", submission.request_id)
                started = time.perf_counter()
                run_approved(client, submission)
                in_domain.append(time.perf_counter() - started)
                started = time.perf_counter()
                train(data.train.images, data.train.labels, **{k: v for k, v in plan.config().items()})
                plain.append(time.perf_counter() - started)
    best_domain, best_plain = min(in_domain), min(plain)
    print(f"upload: {_upload_rate(upload_output)}")
    print(f"training plan, {len(data.train.labels)} images at {args.size} px, {args.epochs} epochs "
          f"(best of {args.repeats}):")
    print(f"  inside the domain (call -> weights in hand): {best_domain:.2f} s")
    print(f"  plain PyTorch on the same tensors:           {best_plain:.2f} s")
    print(f"domain / plain PyTorch ratio: {best_domain / best_plain:.3f} (goal <= 1.15)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
