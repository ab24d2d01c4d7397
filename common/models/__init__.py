"""Model architectures for chest X-ray classification (1 input channel, 2 logits), by name.

Both sides build models from here: the hospital domain inside approved training plans,
and the researcher locally. Each architecture is one file in this package that
registers a factory under its name; adding one is a new file plus its import below.

    model = build_model("small_cnn", image_size=64)
    logits = model(torch.zeros(8, 1, 64, 64))        # shape (8, 2)

    @register_model("tiny")
    def tiny() -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16, NUM_CLASSES))

State dicts hold float32 parameters, and for resnet18 also BatchNorm running
statistics (float32) and ``num_batches_tracked`` counters (int64, shared exactly).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

NUM_CLASSES = 2
MIN_IMAGE_SIZE = 16

_FACTORIES: dict[str, Callable[[], nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Decorator: register a factory of a freshly initialised model under `name`."""
    if not name.isidentifier():
        raise ValueError(f"model name {name!r} must be a Python identifier")

    def register(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"a model called {name!r} is already registered")
        _FACTORIES[name] = factory
        return factory
    return register


def model_names() -> tuple[str, ...]:
    """Names of the registered models, in registration order."""
    return tuple(_FACTORIES)


def build_model(name: str = "small_cnn", image_size: int = 64) -> nn.Module:
    """A freshly initialised model called `name` (see `model_names()`).

    `image_size` is checked for every model (the registered models pool globally and
    work for any size of at least 16 px); smaller sizes are refused.
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    if int(image_size) < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} px, got {image_size}")
    return _FACTORIES[name]()


from common.models import small_cnn  # noqa: E402,F401  (each module registers itself)
from common.models import resnet18  # noqa: E402,F401,I001

MODEL_NAMES = model_names()  # the built-in models; registered ones join model_names()
