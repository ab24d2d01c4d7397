"""`make demo`: one hospital, one researcher, the whole path, on this machine.

Admin: start a domain, upload synthetic X-rays, create accounts, issue a token.
Researcher: connect, try the plan on the mock, submit. Admin: review, approve.
Researcher: run it, fetch the weights, evaluate on the held-out split through a
second approved request. Then a summary, and the domain is stopped.

The domain runs the demos' policy folder (demos/policies/), in which no dataset requires
differential privacy, so that plain training and evaluation can be shown; the shipped
policies/ require DP on the X-rays (notebook 05 walks that path).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from common.errors import PneumoSyftError
from demos.local_domain import TRUSTED, LocalDomain

RESEARCHER = "ada@pneumosyft-research.org"
ACCOUNTS = Path(__file__).resolve().parent.parent / "policies" / "accounts.yaml"


class Stopwatch:
    """Times named stages and prints them as they start."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, float]] = []

    @contextmanager
    def stage(self, who: str, what: str):
        print(f"\n== [{who}] {what}", flush=True)
        started = time.perf_counter()
        yield
        self.stages.append((what, time.perf_counter() - started))


def approve_latest(domain: LocalDomain) -> str:
    """As the admin (`AdminClient`, what `review list / show / approve` use): find the
    pending request, show its verdict, approve it."""
    admin = domain.admin
    pending = [summary for summary in admin.requests() if summary.status == "pending"]
    if not pending:
        raise PneumoSyftError("no pending request to approve")
    summary = pending[-1]
    print(f"request {summary.id} from {summary.requester}: {summary.function}")
    for kwarg, name in summary.inputs.items():
        print(f"  input {kwarg} <- {name}")
    print("  verdict: " + ("complies with the approval rules" if summary.verdict_ok
                           else "; ".join(summary.verdict_reasons)))
    approved = admin.approve(summary.id)
    print(f"approved {approved.id}")
    return approved.id


def run(n_images: int, size: int, epochs: int, workdir: Path) -> dict:
    from datasets.xray import load_synthetic
    from datasets.xray.baseline import pixel_logistic_regression
    from scientist import TrainingPlan, connect
    from scientist.plans import evaluate_xray_plan, train_xray_plan
    from scientist.submission import run_approved, split_assets, submit_plan, wait_for_approval

    clock = Stopwatch()
    domain = LocalDomain.start_new("St Mary Pneumonia Unit", workdir / "hospital",
                                   extra_args=TRUSTED)
    with domain:
        with clock.stage("admin", "start the domain"):
            print(domain.cli("status").rstrip())
        with clock.stage("admin", f"upload {n_images} synthetic X-rays at {size} px"):
            print(domain.cli("upload", "synthetic", "--name", "xray", "--n", str(n_images),
                             "--size", str(size)).rstrip())
        with clock.stage("admin", "apply policies/accounts.yaml and issue a token"):
            print(domain.cli("accounts", "apply", str(ACCOUNTS)).rstrip())
            connection_file = domain.researcher_file(RESEARCHER, workdir / "ada.json")
        with clock.stage("researcher", "connect and try the plan on the mock"):
            client = connect(connection_file=connection_file)
            train = split_assets(client, "xray", "train")
            plan = TrainingPlan(model="small_cnn", epochs=epochs)
            mock = TrainingPlan(model="small_cnn", epochs=1).run_locally(
                train["images"].mock, train["labels"].mock)
            print(f"mock run ok: loss {mock['history']['loss'][-1]:.3f} "
                  f"on {mock['n_samples']} mock images")
        with clock.stage("researcher", "submit the training plan"):
            submission = submit_plan(client, train_xray_plan, inputs=train,
                                     constants={"config": plan.config(), "initial_weights": {}},
                                     reason=f"{epochs} epochs of a small CNN; weights only")
            print(f"submitted request {submission.request_id}")
        with clock.stage("admin", "review and approve"):
            approve_latest(domain)
        with clock.stage("researcher", "train inside the domain and fetch the weights"):
            wait_for_approval(client, submission, timeout=120)
            trained = run_approved(client, submission)
            history = trained["history"]
            print(f"weights: {len(trained['weights'])} arrays; per-epoch accuracy "
                  + ", ".join(f"{a:.3f}" for a in history["accuracy"]))
        with clock.stage("researcher", "evaluate on the hospital's held-out split"):
            test = split_assets(client, "xray", "test")
            evaluation = submit_plan(client, evaluate_xray_plan, inputs=test,
                                     constants={"weights": trained["weights"],
                                                "config": plan.config()},
                                     reason="evaluate my weights on the held-out split")
            approve_latest(domain)
            wait_for_approval(client, evaluation, timeout=120)
            metrics = run_approved(client, evaluation)["metrics"]
        with clock.stage("researcher", "pixel logistic-regression baseline (synthetic data)"):
            data = load_synthetic(n=n_images, size=size)
            baseline = pixel_logistic_regression(data.train, data.test)
    print("\n== summary (SYNTHETIC chest X-rays, not patient data)")
    print(f"small CNN trained in the domain: accuracy {metrics['accuracy']:.3f}, "
          f"AUC {metrics['auc']:.3f} on {metrics['n_samples']} held-out images")
    print(f"confusion matrix [[tn, fp], [fn, tp]]: {metrics['confusion_matrix']}")
    print(f"pixel logistic regression:      accuracy {baseline['accuracy']:.3f}, "
          f"AUC {baseline['auc']:.3f}")
    for what, seconds in clock.stages:
        print(f"  {seconds:7.1f} s  {what}")
    return {"metrics": metrics, "baseline": baseline, "stages": clock.stages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="synthetic images (default 3000)")
    parser.add_argument("--size", type=int, default=64, metavar="PX")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="pneumosyft-demo-") as workdir:
            run(args.n, args.size, args.epochs, Path(workdir))
    except PneumoSyftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
