"""A registered model as the public sequence of steps both computing parties and the dealer
follow: convolutions, 2x2 max-pools, ReLUs, a global average pool and a linear layer,
with every shape known before any value is.

ReLU and max-pooling commute (max(relu(a), relu(b)) = relu(max(a, b))), so a conv/ReLU/pool
block runs as conv/pool/ReLU: the secure ReLU then sees a quarter of the values.

    steps = compile_model("small_cnn", image_size=64, batch=1)
    [s.kind for s in steps][:4]      # ['conv', 'maxpool', 'relu', 'conv']

Models with other layers (resnet18: batch norm, residual additions) are refused.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

SUPPORTED_MODELS = ("small_cnn",)


@dataclass(frozen=True)
class Step:
    """One step: its kind, the weight names it uses (prefix), its input and output shapes."""

    kind: str  # conv | maxpool | relu | avgpool | linear
    label: str  # unique in the circuit: names the dealer's material for it
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight: str = ""  # state-dict prefix: weight at f"{weight}.weight", bias at ".bias"
    padding: int = 0
    kernel: int = 0


def compile_model(model_name: str, image_size: int, batch: int = 1) -> list[Step]:
    """The steps of `model_name` on `batch` images of `image_size` px (one channel); built
    once per arguments (a query's hot path asks for them every time)."""
    return list(_compiled(model_name, image_size, batch))


@functools.lru_cache(maxsize=64)
def _compiled(model_name: str, image_size: int, batch: int) -> tuple[Step, ...]:
    from torch import nn

    from common.models import build_model

    if model_name not in SUPPORTED_MODELS:
        raise ValueError(f"private inference supports {', '.join(SUPPORTED_MODELS)}, "
                         f"not {model_name!r}")
    if not 8 <= image_size <= 512 or not 1 <= batch <= 10_000:
        raise ValueError("image size must be 8 to 512 px and the batch 1 to 10,000 images")
    model = build_model(model_name, image_size=image_size)
    modules: list[tuple[str, Any]] = [(f"features.{i}", m) for i, m in
                                      enumerate(model.features)]
    modules += [("pool", model.pool), ("classifier", model.classifier)]
    # conv, relu, maxpool  ->  conv, maxpool, relu
    ordered = list(modules)
    for i in range(len(ordered) - 1):
        if isinstance(ordered[i][1], nn.ReLU) and isinstance(ordered[i + 1][1], nn.MaxPool2d):
            ordered[i], ordered[i + 1] = ordered[i + 1], ordered[i]
    shape: tuple[int, ...] = (batch, 1, image_size, image_size)
    steps: list[Step] = []
    for number, (name, module) in enumerate(ordered):
        label = f"{number}"
        if isinstance(module, nn.Conv2d):
            k, p = module.kernel_size[0], module.padding[0]
            if module.stride != (1, 1) or module.kernel_size[0] != module.kernel_size[1]:
                raise ValueError(f"{name}: only square stride-1 convolutions")
            out = (batch, module.out_channels, shape[2] + 2 * p - k + 1, shape[3] + 2 * p - k + 1)
            steps.append(Step("conv", label, shape, out, weight=name, padding=p, kernel=k))
        elif isinstance(module, nn.MaxPool2d):
            out = (*shape[:2], -(-shape[2] // 2), -(-shape[3] // 2))
            steps.append(Step("maxpool", label, shape, out))
        elif isinstance(module, nn.ReLU):
            steps.append(Step("relu", label, shape, shape))
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            out = (shape[0], shape[1])
            steps.append(Step("avgpool", label, shape, out))
        elif isinstance(module, nn.Linear):
            out = (shape[0], module.out_features)
            steps.append(Step("linear", label, shape, out, weight=name))
        else:
            raise ValueError(f"{name}: {type(module).__name__} is not supported")
        shape = steps[-1].out_shape
    return tuple(steps)


def comparisons(step: Step) -> list[tuple[str, tuple[int, ...]]]:
    """(label, shape) of each secure comparison a step makes: a ReLU one, a 2x2 max-pool
    two (rows, then columns: max(a, b) = b + relu(a - b))."""
    if step.kind == "relu":
        return [(f"{step.label}/relu", step.in_shape)]
    if step.kind == "maxpool":
        n, c, h, w = step.in_shape
        rows = (n, c, -(-h // 2), w + w % 2)
        return [(f"{step.label}/rows", rows), (f"{step.label}/cols", step.out_shape)]
    return []


def largest_exchange_words(steps: list[Step]) -> int:
    """The most words a party sends in one round of `steps` (a bound on what it takes)."""
    largest = 0
    for step in steps:
        if step.kind in ("conv", "linear"):
            weights = step.out_shape[1] * step.in_shape[1] * max(step.kernel, 1) ** 2
            largest = max(largest, _size(step.in_shape) + weights)
        for _, shape in comparisons(step):
            largest = max(largest, 4 * _size(shape))  # a carry-chain round: two ANDs
    return largest


def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for n in shape:
        size *= n
    return size

