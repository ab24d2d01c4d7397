"""What the domain itself costs: the same training plan inside a domain and in plain PyTorch.

Starts a domain on a loopback port, uploads synthetic X-rays (upload rate in MB/s),
then, for each repetition, times

* in-domain: from the call of the approved plan to the weights in the researcher's
  hands (submission and approval excluded): the hand-over to the domain's warm sandbox
  (a fresh bwrap started ahead, numpy and torch imported, never used before), the data
  path in and out, the training, the output contract;
* plain PyTorch: `common.training.train` on the very same tensors, in a fresh process
  (`bench/plain_train.py`) with the same torch thread count and environment as the
  sandbox (`python -I -B`, nothing in the environment but the thread count), numpy and
  torch imported ahead as in the warm sandbox, timed from there: data in, training,
  weights out,

each measured with the machine otherwise idle (the domain's next spare has finished
starting), and prints both thread counts, the sandbox's start cost per run (from the
domain's audit log) and the ratio of the best times (goal <= 1.15).

    .venv/bin/python bench/bench_domain_overhead.py --n 3000 --size 64 --epochs 2
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workload import training_workload_args  # noqa: E402  (bench/ is on sys.path)
from datasets.xray import load_synthetic  # noqa: E402
from demos.local_domain import TRUSTED, LocalDomain  # noqa: E402
from scientist import TrainingPlan, connect  # noqa: E402
from scientist.plans import train_xray_plan  # noqa: E402
from scientist.submission import run_approved, split_assets, submit_plan  # noqa: E402

ACCOUNTS = Path(__file__).resolve().parent.parent / "policies" / "accounts.yaml"
RESEARCHER = "ada@pneumosyft-research.org"
THREADS = os.cpu_count() or 1  # the domain's sandbox and the baseline alike
SETTLE_SECONDS = 4


def plain_run(data_file: Path, epochs: int) -> dict:
    """One plain training in a fresh process with THREADS torch threads, timed whole."""
    command = [sys.executable, "-I", "-B", str(Path(__file__).with_name("plain_train.py")),
               "--data", str(data_file), "--epochs", str(epochs)]
    # the sandbox's conditions: an isolated interpreter and an environment holding only the
    # thread count (with a PATH, importing torch runs gcc and ldconfig through
    # ctypes.util.find_library: 0.5 s here that the sandbox, with no PATH, never pays)
    env = {"OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


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
        with LocalDomain.start_new("Bench General", Path(workdir) / "state",
                                   torch_threads=THREADS, extra_args=TRUSTED) as domain:
            upload_output = domain.cli("upload", "synthetic", "--name", "xray", "--n",
                                       str(args.n), "--size", str(args.size))
            domain.cli("accounts", "apply", str(ACCOUNTS))
            client = connect(connection_file=domain.researcher_file(RESEARCHER))
            inputs = split_assets(client, "xray", "train")
            data_file = Path(workdir) / "train.npz"
            np.savez(data_file, images=data.train.images, labels=data.train.labels)
            in_domain, plain, baseline_threads, plain_train_seconds = [], [], set(), []
            import_seconds: list[float] = []
            for _ in range(args.repeats):
                submission = submit_plan(client, train_xray_plan, inputs=inputs,
                                         constants={"config": plan.config(),
                                                    "initial_weights": {}},
                                         reason="benchmark")
                domain.cli("review", "approve", submission.request_id)
                time.sleep(SETTLE_SECONDS)  # the domain's spare has finished starting
                started = time.perf_counter()
                run_approved(client, submission)
                in_domain.append(time.perf_counter() - started)
                time.sleep(SETTLE_SECONDS)  # the next spare starts when a run ends
                baseline = plain_run(data_file, args.epochs)
                plain.append(baseline["seconds"])
                plain_train_seconds.append(baseline["train_seconds"])
                import_seconds.append(baseline["import_seconds"])
                baseline_threads.add(baseline["torch_threads"])
            runs = [e for e in domain.admin.audit(action="execution") if e["outcome"] == "ok"]
    best_domain, best_plain = min(in_domain), min(plain)
    print(f"upload: {_upload_rate(upload_output)}")
    print(f"training plan, {len(data.train.labels)} images at {args.size} px, {args.epochs} epochs "
          f"(best of {args.repeats}):")
    print(f"  inside the domain (call -> weights in hand): {best_domain:.2f} s")
    print(f"  plain PyTorch on the same tensors:           {best_plain:.2f} s "
          f"(a fresh process, torch imported ahead in {min(import_seconds):.2f} s, not counted)")
    print(f"  torch threads: sandbox {THREADS} (the domain's OMP_NUM_THREADS), baseline "
          f"{sorted(baseline_threads)}")
    trains = [float(r) for r in plain_train_seconds]
    sandboxed = [float(e["seconds"]) for e in runs]
    print(f"  of which training alone (plain) {min(trains):.2f}-{max(trains):.2f} s; "
          f"the sandboxed run (start to result) {min(sandboxed):.2f}-{max(sandboxed):.2f} s")
    starts = [float(e["start_seconds"]) for e in runs]
    ready = [float(e["ready_seconds"]) for e in runs]
    warm = sum(1 for e in runs if e.get("warm") == "yes")
    print(f"  sandbox start per run ({warm} of {len(runs)} on a warm spare): hand-over to "
          f"runner {min(starts):.3f}-{max(starts):.3f} s, to researcher code "
          f"{min(ready):.3f}-{max(ready):.3f} s (goal <= 0.3)")
    print(f"domain / plain PyTorch ratio: {best_domain / best_plain:.3f} (goal <= 1.15)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
