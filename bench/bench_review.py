"""Review at scale: a `review auto` pass with nothing pending, on a domain with thousands
of past requests.

The pass reads the domain's index of undecided requests (`server/pending_requests.py`)
and fetches only those. The baseline, measured in the same run on the same domain, is
what a stock syft admin does and what review did before the index: fetch every request
(`client.requests.get_all()`) and keep the pending ones. Past requests are copies of
one decided (denied) request, written straight into syft's store while the domain is
stopped (submitting ten thousand through the API would take hours); the domain's start,
which scans them once to build the index, is timed too.

    .venv/bin/python bench/bench_review.py --past 10000
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import syft_compat  # noqa: E402
from common.syft_requests import is_pending  # noqa: E402
from common.vetted_plans import train_xray_plan  # noqa: E402
from demos.local_domain import LocalDomain  # noqa: E402
from domain_setup import PROJECT_ROOT  # noqa: E402
from scientist import TrainingPlan, connect  # noqa: E402
from scientist.submission import split_assets, submit_plan  # noqa: E402

RESEARCHER = "ada@pneumosyft-research.org"


def one_denied_request(domain: LocalDomain, work: Path) -> str:
    """A researcher submits a training plan and the admin denies it; its request id."""
    client = connect(connection_file=domain.researcher_file(RESEARCHER, work / "ada.json"))
    submission = submit_plan(client, train_xray_plan, inputs=split_assets(client, "xray", "train"),
                             constants={"config": TrainingPlan().config(), "initial_weights": {}},
                             reason="the one that is copied")
    domain.cli("review", "deny", submission.request_id, "--reason", "benchmark history")
    return submission.request_id


def archive_domain(name: str, work: Path) -> tuple[LocalDomain, str]:
    """A running domain (the demos' policies, a tiny data set, the accounts) with one
    denied request; (domain, that request's id)."""
    domain = LocalDomain.start_new(name, work / "state", extra_args=(
        "--policies", str(PROJECT_ROOT / "demos" / "policies")))
    try:
        domain.cli("upload", "synthetic", "--name", "xray", "--n", "60", "--size", "16",
                   "--no-progress")
        domain.cli("accounts", "apply", str(PROJECT_ROOT / "policies" / "accounts.yaml"))
        return domain, one_denied_request(domain, work)
    except BaseException:
        domain.stop()
        raise


def write_past_requests(domain: LocalDomain, request_id: str, copies: int) -> float:
    """With the domain stopped, store `copies` copies of a decided request under new ids
    (the server's own stash, root credentials); seconds taken."""
    from domain_setup.server.app import build_worker

    uid_type = syft_compat.resolve("syft.types.uid:UID")
    worker = build_worker(domain.state, domain.state.load_config())
    try:
        stash = worker.services.request.stash
        original = stash.get_by_uid(worker.verify_key, syft_compat.to_uid(request_id)).unwrap()
        started = time.monotonic()
        for i in range(copies):
            stash.set(worker.verify_key, original.model_copy(update={
                "id": uid_type(), "request_hash": secrets.token_hex(32)})).unwrap()
            if (i + 1) % 1000 == 0:
                print(f"  {i + 1} past requests written", file=sys.stderr)
        return time.monotonic() - started
    finally:
        worker.stop()


def timed(passes: int, action) -> list[float]:
    seconds = []
    for _ in range(passes):
        started = time.monotonic()
        action()
        seconds.append(time.monotonic() - started)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--past", type=int, default=10_000, help="past (decided) requests")
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args(argv)
    if args.past < 1 or args.passes < 1:
        parser.error("--past and --passes must be at least 1")
    with tempfile.TemporaryDirectory(prefix="pneumosyft-review-") as workdir:
        work = Path(workdir)
        domain, request_id = archive_domain("Archive General", work)
        try:
            domain.stop()
            wrote = write_past_requests(domain, request_id, args.past - 1)
            started = time.monotonic()
            domain.start()
            start_seconds = time.monotonic() - started
            admin = domain.admin
            indexed = timed(args.passes, lambda: admin.auto_review(approve_compliant=True))
            client = admin.reviewer.client
            every = timed(args.passes, lambda: [r for r in client.requests.get_all()
                                                if is_pending(r)])
            counted = len(client.requests.get_all())
        finally:
            domain.stop()
    print(f"{counted} past requests ({args.past - 1} copies written in {wrote:.0f} s); "
          f"the domain started in {start_seconds:.1f} s (its pending index scanned them)")
    print(f"review auto, nothing pending: median {statistics.median(indexed):.3f} s "
          f"over {args.passes} passes (goal < 1 s)")
    print(f"baseline, every request fetched: median {statistics.median(every):.2f} s")
    print(f"ratio baseline / review: {statistics.median(every) / statistics.median(indexed):.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
