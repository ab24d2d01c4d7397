"""What differential privacy costs and what it buys, on synthetic X-rays, in one run.

For ε in 1, 3, 8 and ∞ (no DP), with the same hyper-parameters:

* utility: `common.dp_training.train_private` (DP-SGD, Poisson sampling, clipping at
  `--max-grad-norm`, the noise the domain would size for ε at δ = 1e-5) or
  `common.training.train` (ε = ∞) on the training split; accuracy and AUC on the
  held-out split; training time;
* measured privacy: the loss-threshold membership-inference attack
  (`scientist.membership_inference`) on a setting that overfits (`--mia-n` images,
  `--mia-epochs` epochs): its AUC over the training images against as many held-out ones;
* speed: one DP-SGD epoch against one plain epoch of the same model on the same
  tensors, same batch size, same torch threads, same process, Opacus imported ahead
  (goal <= 2.0 for small_cnn), on the project's default workload (64 px) and on the
  utility setting (28 px, where per-sample gradients weigh more against a cheap model).

    .venv/bin/python bench/bench_dp.py --n 20000 --size 28 --epochs 6 --batch-size 256

DP needs data: at ε = 8 the AUC gap to non-private training is about 16 points with 2400
training images (64 px) and about 5 with 16,000 (28 px), the defaults.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.dp_accounting import dp_sgd_mechanism  # noqa: E402
from common.dp_training import train_private  # noqa: E402
from common.training import evaluate, train  # noqa: E402
from datasets.xray import load_synthetic  # noqa: E402
from scientist.membership_inference import loss_threshold_auc  # noqa: E402

DELTA = 1e-5
EPSILONS = (1.0, 3.0, 8.0, math.inf)
THREADS = os.cpu_count() or 1


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="synthetic images for utility")
    parser.add_argument("--size", type=int, default=28, help="image side in px")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--mia-n", type=int, default=500, help="images of the overfitting set")
    parser.add_argument("--mia-size", type=int, default=28)
    parser.add_argument("--mia-epochs", type=int, default=40)
    parser.add_argument("--mia-batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    for name in ("n", "size", "epochs", "batch_size", "mia_n", "mia_epochs", "mia_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def fit(x, y, *, epsilon: float, epochs: int, batch_size: int, lr: float,
        max_grad_norm: float) -> tuple[dict, float]:
    """(weights, seconds) of one training, DP unless epsilon is inf (the noise is sized
    before the clock starts: the domain does that before the run)."""
    if math.isinf(epsilon):
        started = time.perf_counter()
        result = train(x, y, epochs=epochs, batch_size=batch_size, lr=lr)
    else:
        mechanism = dp_sgd_mechanism(target_epsilon=epsilon, delta=DELTA, n_samples=len(y),
                                     batch_size=batch_size, epochs=epochs)
        started = time.perf_counter()
        result = train_private(x, y, noise_multiplier=mechanism.noise_multiplier,
                               max_grad_norm=max_grad_norm, delta=DELTA, epochs=epochs,
                               batch_size=batch_size, lr=lr)
    return result["weights"], time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    warnings.filterwarnings("ignore")  # Opacus' secure-RNG and hook notices
    torch.set_num_threads(THREADS)
    import opacus  # noqa: F401  (imported ahead: its import is not training time)

    data = load_synthetic(n=args.n, size=args.size)
    overfit = load_synthetic(n=args.mia_n, size=args.mia_size, seed=1)
    members = (overfit.train.images[: len(overfit.test.labels)],
               overfit.train.labels[: len(overfit.test.labels)])
    non_members = (overfit.test.images, overfit.test.labels)
    hyper = dict(batch_size=args.batch_size, lr=args.lr, max_grad_norm=args.max_grad_norm)

    print(f"utility: {len(data.train.labels)} training / {len(data.test.labels)} held-out "
          f"images at {args.size} px, {args.epochs} epochs, batch {args.batch_size}, lr "
          f"{args.lr:g}, clipping {args.max_grad_norm:g}, δ {DELTA:g}, {THREADS} torch threads")
    print(f"membership inference: {len(members[1])} of the {len(overfit.train.labels)} "
          f"training images against {len(non_members[1])} held-out, {args.mia_size} px, "
          f"{args.mia_epochs} epochs, batch {args.mia_batch_size}")
    print(f"{'ε':>5}  {'accuracy':>8}  {'AUC':>6}  {'MIA AUC':>7}  {'train s':>7}")
    rows = {}
    for epsilon in EPSILONS:
        weights, seconds = fit(data.train.images, data.train.labels, epsilon=epsilon,
                               epochs=args.epochs, **hyper)
        metrics = evaluate(data.test.images, data.test.labels, weights)
        attacked, _ = fit(overfit.train.images, overfit.train.labels, epsilon=epsilon,
                          epochs=args.mia_epochs,
                          **dict(hyper, batch_size=args.mia_batch_size))
        mia = loss_threshold_auc(attacked, "small_cnn", members, non_members)
        rows[epsilon] = (metrics["accuracy"], metrics["auc"], mia, seconds)
        print(f"{epsilon:>5g}  {metrics['accuracy']:>8.3f}  {metrics['auc']:>6.3f}  "
              f"{mia:>7.3f}  {seconds:>7.1f}", flush=True)
    gap = rows[math.inf][1] - rows[8.0][1]
    print(f"AUC at ε 8 is {gap * 100:.1f} points below no DP (goal <= 5); membership "
          f"inference AUC at ε <= 8: {max(rows[e][2] for e in (1.0, 3.0, 8.0)):.3f} "
          f"(goal <= 0.55; no DP {rows[math.inf][2]:.3f})")

    default = load_synthetic(n=3000, size=64)  # the project's default workload
    for label, (x, y), batch in (
            (f"{len(default.train.labels)} images at 64 px (the default workload), batch 128",
             (default.train.images, default.train.labels), 128),
            (f"{len(data.train.labels)} images at {args.size} px (the utility setting), batch "
             f"{args.batch_size}", (data.train.images, data.train.labels), args.batch_size)):
        one_epoch = dict(hyper, epochs=1, batch_size=batch)
        fit(x, y, epsilon=8.0, **one_epoch)  # warm-up
        dp_seconds = min(fit(x, y, epsilon=8.0, **one_epoch)[1] for _ in range(2))
        plain_seconds = min(fit(x, y, epsilon=math.inf, **one_epoch)[1] for _ in range(2))
        print(f"one epoch, {label}: DP-SGD {dp_seconds:.2f} s, plain {plain_seconds:.2f} s "
              f"(same tensors, threads and process; best of 2); ratio "
              f"{dp_seconds / plain_seconds:.2f} (goal <= 2.0)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
