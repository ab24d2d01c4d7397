"""Command-line options shared by the benchmarks that train on synthetic X-rays."""

from __future__ import annotations

import argparse


def training_workload_args(description: str, argv: list[str] | None, *,
                           n: int) -> argparse.Namespace:
    """Parse --n, --size, --epochs and --repeats (all checked to be positive).

        args = training_workload_args(__doc__.splitlines()[0], argv, n=2400)
        args.n, args.size, args.epochs, args.repeats     # 2400, 64, 2, 2
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n", type=int, default=n, help=f"synthetic images (default {n})")
    parser.add_argument("--size", type=int, default=64, metavar="PX",
                        help="image side in pixels (default 64)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed repeats; the best counts (default 2)")
    args = parser.parse_args(argv)
    for option in ("n", "epochs", "repeats"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1")
    return args
