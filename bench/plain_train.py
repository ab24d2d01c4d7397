"""The baseline of bench_domain_overhead.py: the same training in plain PyTorch, in a fresh
process, as the domain's warm sandbox runs it: numpy, torch, torch._dynamo and Opacus
imported ahead (as in a notebook after its first run, or a sandbox started before its run), then timed from there: the tensors read
in, `common.training.train`, the weights out as numpy arrays.

    OMP_NUM_THREADS=2 python bench/plain_train.py --data train.npz --epochs 2

Prints one JSON line: the seconds from data to weights, of `train` alone, of the imports
(not counted), and the torch thread count used.
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

    launched = time.perf_counter()
    import numpy as np
    import opacus  # noqa: F401  (imported ahead, as a warm sandbox has them: runner_main's
    import torch
    import torch._dynamo  # noqa: F401  WARM_MODULES; torch's first optimiser step imports
    # torch._dynamo, 1.1 s that would otherwise count against plain PyTorch)

    from common.training import train
    from common.training_config import default_training_config

    imported = time.perf_counter()
    with np.load(args.data, allow_pickle=False) as data:
        images, labels = data["images"], data["labels"]
    config = dict(default_training_config(), epochs=args.epochs)
    started = time.perf_counter()
    result = train(torch.from_numpy(images), torch.from_numpy(labels), **config)
    done = time.perf_counter()
    print(json.dumps({"seconds": done - imported, "train_seconds": done - started,
                      "import_seconds": imported - launched,
                      "torch_threads": torch.get_num_threads(),
                      "weights": len(result["weights"])}), flush=True)
    os._exit(0)  # as the sandbox's runner ends: no interpreter teardown (torch's takes ~0.5 s)


if __name__ == "__main__":
    main()
