"""The baseline of bench_domain_overhead.py: the same training in plain PyTorch, in a fresh
process, as the sandbox runs it (a new interpreter, numpy and torch imported, the tensors
read in, `common.training.train`, the weights out).

    OMP_NUM_THREADS=2 python bench/plain_train.py --data train.npz --epochs 2

Prints one JSON line: the seconds of `train` alone and the torch thread count used. The
benchmark times the whole process from launch to exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="npz with images and labels")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from common.training import train
    from common.training_config import default_training_config

    with np.load(args.data, allow_pickle=False) as data:
        images, labels = data["images"], data["labels"]
    config = dict(default_training_config(), epochs=args.epochs)
    started = time.perf_counter()
    result = train(torch.from_numpy(images), torch.from_numpy(labels), **config)
    train_seconds = time.perf_counter() - started
    print(json.dumps({"train_seconds": train_seconds, "torch_threads": torch.get_num_threads(),
                      "weights": len(result["weights"])}), flush=True)
    os._exit(0)  # as the sandbox's runner ends: no interpreter teardown (torch's takes ~0.5 s)


if __name__ == "__main__":
    main()
