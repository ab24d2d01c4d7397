"""Secret sharing a ResNet-18 state dict, against drawing the random words it needs.

Shares and reconstructs the state dict of a ResNet-18 for pneumonia X-rays
(1 input channel, 2 classes, ~11.2 M values) among `--parties` parties, and
times it beside the baseline: drawing the (n-1) x values random 64-bit words
that sharing needs, from the same generator (os.urandom), in the same run.
Best of `--repeats` for each, interleaved.

    .venv/bin/python bench/bench_secret_sharing.py --parties 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.secret_sharing import (  # noqa: E402
    random_words, reconstruct_state_dict, share_state_dict,
)

GOAL = 1.5


def resnet18_state_dict() -> dict[str, np.ndarray]:
    """Random float32 weights (int64 counters) in torchvision resnet18's shapes.

    One input channel (grey X-rays), two classes (normal, pneumonia).
    """
    import torch
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=2)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    rng = np.random.default_rng(0)  # benchmark data only
    return {name: (rng.normal(scale=0.05, size=tuple(t.shape)).astype(np.float32)
                   if t.is_floating_point() else t.numpy().copy())
            for name, t in model.state_dict().items()}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds `fn()` took, and what it returned."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parties", type=int, default=3, help="number of parties (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    args = parser.parse_args(argv)
    if args.parties < 2 or args.repeats < 1:
        parser.error("--parties must be >= 2 and --repeats >= 1")

    weights = resnet18_state_dict()
    values = sum(w.size for w in weights.values())
    n = args.parties
    print(f"state dict: {len(weights)} arrays, {values / 1e6:.2f} M values, {n} parties")

    # Correctness first: the benchmark times the real thing.
    restored = reconstruct_state_dict(share_state_dict(weights, n))
    error = max(float(np.abs(restored[k].astype(np.float64) - w).max(initial=0))
                for k, w in weights.items())
    assert error <= 2.0 ** -17, error

    timings: dict[str, list[float]] = {"random": [], "share": [], "reconstruct": []}
    for _ in range(args.repeats):
        seconds, words = timed(lambda: [random_words(values) for _ in range(n - 1)])
        timings["random"].append(seconds)
        del words
        seconds, parties = timed(lambda: share_state_dict(weights, n))
        timings["share"].append(seconds)
        timings["reconstruct"].append(timed(lambda: reconstruct_state_dict(parties))[0])
        del parties
    random_s = min(timings["random"])
    share_s, reconstruct_s = min(timings["share"]), min(timings["reconstruct"])
    both = min(s + r for s, r in zip(timings["share"], timings["reconstruct"]))
    print(f"random words ({n - 1} x {values / 1e6:.2f} M): {random_s:.3f} s "
          f"({(n - 1) * values * 8 / random_s / 1e6:.0f} MB/s)")
    print(f"share (encode + split):     {share_s:.3f} s")
    print(f"reconstruct (sum + decode): {reconstruct_s:.3f} s")
    print(f"share+reconstruct:          {both:.3f} s (max error {error:.2g})")
    print(f"share+reconstruct / random-words ratio: {both / random_s:.2f} (goal <= {GOAL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
