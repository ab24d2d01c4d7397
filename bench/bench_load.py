"""A busy day: N researchers each submit M vetted training requests to one domain at once,
the domain approves the compliant ones as they arrive (approval.yaml `review:
approve_compliant: true`; `--approver review-loop`: the admin's `review auto
--approve-compliant` in a loop instead), every researcher runs hers once approved.

Prints the domain's throughput (runs per minute, from the first submission to the last
result) against the machine's capacity measured in the same run: the same plan on the
same tensors executed N x M times one by one in a plain warm sandbox loop (`Sandbox.run`,
same limits, every core's torch thread for each run; no domain, no syft, no HTTP; the
domain runs two at once with its cores shared between them), the ratio (goal >= 0.7), the
approval latency (a request's time pending on the domain, creation to approval; goal
< 1 s median) beside when the researcher saw it, how long runs waited in the sandbox
queue, and the server's peak memory.

    .venv/bin/python bench/bench_load.py --researchers 20 --requests 5 --n 600 --size 28
"""

from __future__ import annotations

import argparse
from datetime import datetime
import concurrent.futures
import inspect
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.vetted_plans import train_xray_plan  # noqa: E402
from datasets.xray import load_synthetic  # noqa: E402
from demos.local_domain import LocalDomain  # noqa: E402
from domain_setup import PROJECT_ROOT  # noqa: E402
from domain_setup.policy.approval import sandbox_limits  # noqa: E402
from domain_setup.policy.snapshot import DomainPolicies  # noqa: E402
from domain_setup.sandbox import Sandbox  # noqa: E402
from domain_setup.vetting.registry import runnable  # noqa: E402
from scientist import TrainingPlan, connect  # noqa: E402
from scientist.submission import run_approved, split_assets, submit_plan, request_status  # noqa: E402

THREADS = os.cpu_count() or 1


def accounts_yaml(n: int) -> str:
    """The shipped admin and data owner, and `n` researchers of the study group."""
    lines = ["accounts:",
             "  - {name: Hospital Admin, email: admin@pneumosyft-hospital.org, role: admin}",
             "  - {name: Olivia Owens, email: owner@stmary-hospital.org, role: data_owner}"]
    lines += [f"  - {{name: Researcher {i:02d}, email: {email(i)}, role: data_scientist, "
              f"groups: [pneumonia-study]}}" for i in range(n)]
    return "\n".join(lines) + "\n"


def email(i: int) -> str:
    return f"researcher{i:02d}@pneumosyft-research.org"


def researcher_day(connection_file: Path, requests: int, epochs: int) -> list[dict]:
    """Submit `requests` plans (asking after each how the earlier ones stand), wait until
    all are approved, then run them one by one."""
    client = connect(connection_file=connection_file)
    inputs = split_assets(client, "xray", "train")
    config = TrainingPlan(epochs=epochs).config()
    submitted, approved = [], {}  # seconds from submission to approval, as she sees it
    submit_seconds = []
    for i in range(requests):
        before = time.monotonic()
        submission = submit_plan(client, train_xray_plan, inputs=inputs,
                                 constants={"config": config, "initial_weights": {}},
                                 reason=f"load {i}")
        submitted.append((submission, time.monotonic()))
        submit_seconds.append(submitted[-1][1] - before)
        poll_approvals(client, submitted, approved)
    while len(approved) < len(submitted):
        time.sleep(0.1)
        poll_approvals(client, submitted, approved)
    timings = []
    for (submission, _), submit in zip(submitted, submit_seconds):
        result = run_approved(client, submission)
        assert set(result) >= {"weights", "history"}
        timings.append({"approval": approved[submission.request_id], "submit": submit,
                        "done": time.monotonic()})
    return timings


def poll_approvals(client, submitted: list, approved: dict[str, float]) -> None:
    """Ask the status of each submission not yet seen approved; note when it is."""
    for submission, at in submitted:
        if submission.request_id not in approved and \
                request_status(client, submission)[0] == "approved":
            approved[submission.request_id] = time.monotonic() - at


def admin_loop(domain: LocalDomain, stop: threading.Event, passes: list[float]) -> None:
    """`review auto --approve-compliant`, again and again, through the admin facade."""
    admin = domain.admin
    while not stop.is_set():
        started = time.monotonic()
        for summary, outcome in admin.auto_review(approve_compliant=True):
            if outcome.startswith("left pending ("):
                print(f"approval of {summary.id[:8]} failed, retried next pass: {outcome}")
        passes.append(time.monotonic() - started)


def time_to_decision(domain: LocalDomain) -> list[float]:
    """Seconds each request spent pending: from its creation on the domain (syft's
    `request_time`) to its approval in the audit log."""
    created = {str(r.id.no_dash): r.request_time.utc_timestamp
               for r in domain.admin.reviewer.client.requests.get_all()}
    return sorted(datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp()
                  - created[e["target"]]
                  for e in domain.admin.audit(action="request.approve")
                  if e["outcome"] == "ok" and e["target"] in created)


def baseline(runs: int, data, epochs: int, limits) -> float:
    """Seconds for `runs` runs of the plan one by one in a plain warm sandbox."""
    source, function = runnable(inspect.getsource(train_xray_plan))
    inputs = {"images": data.train.images, "labels": data.train.labels,
              "config": TrainingPlan(epochs=epochs).config(), "initial_weights": {}}
    box = Sandbox(limits, vetted_packages=[PROJECT_ROOT / "common"], torch_threads=THREADS,
                  warm=True)
    try:
        box.prewarm()
        time.sleep(3)
        started = time.monotonic()
        for _ in range(runs):
            box.run(source, function, inputs)
        return time.monotonic() - started
    finally:
        box.close()


def percentile(ordered: list[float], share: float) -> float:
    return ordered[int(share * (len(ordered) - 1))]


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--researchers", type=int, default=20)
    parser.add_argument("--requests", type=int, default=5, help="per researcher")
    parser.add_argument("--n", type=int, default=600, help="synthetic images")
    parser.add_argument("--size", type=int, default=28, metavar="PX")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--approver", choices=("domain", "review-loop"), default="domain",
                        help="who approves: the domain as requests arrive, or the admin's "
                             "review auto in a loop")
    args = parser.parse_args(argv)
    if min(args.researchers, args.requests, args.n, args.epochs) < 1:
        parser.error("every count must be at least 1")
    runs = args.researchers * args.requests
    data = load_synthetic(n=args.n, size=args.size)
    with tempfile.TemporaryDirectory(prefix="pneumosyft-load-") as workdir:
        work = Path(workdir)
        # the demos' policies (no DP required), with these researchers in the study group
        policies = work / "policies"
        shutil.copytree(PROJECT_ROOT / "demos" / "policies", policies)
        accounts = policies / "accounts.yaml"
        accounts.write_text(accounts_yaml(args.researchers))
        approval = policies / "approval.yaml"
        approval.write_text(approval.read_text().replace(
            "approve_compliant: false", f"approve_compliant: {str(args.approver == 'domain').lower()}"))
        with LocalDomain.start_new("Busy General", work / "state", torch_threads=THREADS,
                                   extra_args=("--policies", str(policies))) as domain:
            domain.cli("upload", "synthetic", "--name", "xray", "--n", str(args.n), "--size",
                       str(args.size), "--no-progress")
            domain.cli("accounts", "apply", str(accounts))
            files = [domain.researcher_file(email(i), work / f"r{i}.json")
                     for i in range(args.researchers)]
            limits = sandbox_limits(DomainPolicies.load(policies, domain.state.root).approval,
                                    domain.state.load_config().extra)
            stop, passes = threading.Event(), []
            admin = threading.Thread(target=admin_loop, args=(domain, stop, passes))
            print(f"{args.researchers} researchers x {args.requests} requests, "
                  f"{len(data.train.labels)} images at {args.size} px, {args.epochs} epoch(s), "
                  f"approved by {'the domain' if args.approver == 'domain' else 'review auto'}")
            started = time.monotonic()
            if args.approver == "review-loop":
                admin.start()
            try:
                with concurrent.futures.ThreadPoolExecutor(args.researchers) as pool:
                    days = list(pool.map(lambda f: researcher_day(f, args.requests, args.epochs),
                                         files))
            finally:
                stop.set()
                if admin.is_alive():
                    admin.join()
            domain_seconds = max(t["done"] for day in days for t in day) - started
            executions = [e for e in domain.admin.audit(action="execution")
                          if e["outcome"] == "ok"]
            pending_seconds = time_to_decision(domain)
            server_peak = peak_rss_mb(domain.state.read_pid())
        plain_seconds = baseline(runs, data, args.epochs, limits)
    approvals = sorted(t["approval"] for day in days for t in day)
    submits = sorted(t["submit"] for day in days for t in day)
    waited = sorted(float(e.get("queued_seconds", 0)) for e in executions)
    domain_rate, plain_rate = runs / domain_seconds * 60, runs / plain_seconds * 60
    print(f"domain:   {runs} runs in {domain_seconds:.0f} s = {domain_rate:.1f} runs/min "
          f"({len(executions)} executions audited)")
    print(f"baseline: {runs} runs one by one in a plain warm sandbox in {plain_seconds:.0f} s "
          f"= {plain_rate:.1f} runs/min")
    print(f"submission (the call, the domain's verdict included): median "
          f"{statistics.median(submits):.2f} s, p90 {percentile(submits, 0.9):.2f} s")
    print(f"approval latency (request created to approved, on the domain): median "
          f"{statistics.median(pending_seconds):.2f} s, p90 {percentile(pending_seconds, 0.9):.2f}"
          f" s (goal < 1 s); she saw it approved {statistics.median(approvals):.2f} s (median) "
          f"after her submission returned"
          + (f"; review auto passes: median {statistics.median(passes):.2f} s over "
             f"{len(passes)}" if passes else ""))
    print(f"queue wait per run: median {statistics.median(waited):.1f} s, max {waited[-1]:.1f} s")
    print(f"server peak memory: {server_peak:.0f} MB")
    print(f"throughput ratio domain / baseline: {domain_rate / plain_rate:.2f} (goal >= 0.7)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
