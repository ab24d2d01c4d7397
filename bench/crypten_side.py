"""CrypTen's side of bench_private_inference.py, run in CrypTen's own virtual environment
(bench/.crypten-venv: `make bench-crypten`): the same small_cnn, the same weights and the
same images, two parties and CrypTen's trusted third party (the dealer) in processes of
their own over loopback (gloo), one torch thread each.

    bench/.crypten-venv/bin/python bench/crypten_side.py INPUT.npz OUTPUT.json [--passes 3]

INPUT.npz holds the weights (by state-dict name) and `images` (N, 1, H, W); OUTPUT.json
gets the latency of each pass and the logits.
"""

from __future__ import annotations

import json
import sys
import time
import types

# CrypTen 0.4.1 imports a registry torch no longer has, for its ONNX converter only (not
# used here: the model is built from CrypTen's own layers)
_shim = types.ModuleType("torch.onnx._internal.registration")
_shim.registry = None
sys.modules["torch.onnx._internal.registration"] = _shim

import numpy as np  # noqa: E402
import torch  # noqa: E402

import crypten  # noqa: E402
import crypten.mpc as mpc  # noqa: E402
import crypten.nn as cnn  # noqa: E402

CHANNELS = (8, 16, 32, 64, 64, 64)


def small_cnn(weights: dict) -> "cnn.Module":
    """small_cnn in CrypTen's layers (conv, ReLU, 2x2 max-pool; global average; linear)."""
    layers, index, in_channels = [], 0, 1
    for block, out_channels in enumerate(CHANNELS):
        conv = cnn.Conv2d(in_channels, out_channels, 3, padding=1)
        conv.weight.data = torch.from_numpy(weights[f"features.{index}.weight"]).float()
        conv.bias.data = torch.from_numpy(weights[f"features.{index}.bias"]).float()
        layers += [conv, cnn.ReLU()]
        index += 2
        if block < len(CHANNELS) - 1:
            layers.append(cnn.MaxPool2d(2))
            index += 1
        in_channels = out_channels
    layers += [cnn.AdaptiveAvgPool2d(1), cnn.Flatten()]
    linear = cnn.Linear(in_channels, 2)
    linear.weight.data = torch.from_numpy(weights["classifier.weight"]).float()
    linear.bias.data = torch.from_numpy(weights["classifier.bias"]).float()
    return cnn.Sequential(*layers + [linear])


def main() -> int:
    source, target = sys.argv[1], sys.argv[2]
    passes = int(sys.argv[sys.argv.index("--passes") + 1]) if "--passes" in sys.argv else 3
    data = dict(np.load(source))
    images = torch.from_numpy(data.pop("images")).float()
    crypten.cfg.mpc.provider = "TTP"  # a dealer that is neither computing party, as ours

    @mpc.run_multiprocess(world_size=2)
    def run() -> dict:
        torch.set_num_threads(1)
        model = small_cnn(data)
        model.encrypt(src=0)  # the model holder is party 0
        model.eval()
        seconds, logits = [], None
        for _ in range(passes + 1):  # the first pass warms up
            started = time.perf_counter()
            image = crypten.cryptensor(images, src=1)  # the image holder is party 1
            out = model(image)
            logits = out.get_plain_text()
            seconds.append(time.perf_counter() - started)
        return {"seconds": seconds[1:], "logits": logits.tolist()}

    results = run()
    if not results:
        print("CrypTen's run failed", file=sys.stderr)
        return 1
    with open(target, "w") as handle:
        json.dump(results[0], handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
