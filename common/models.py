"""Model architectures for chest X-ray classification (1 input channel, 2 logits).

Both sides build models from here: the hospital domain inside approved training plans,
and the researcher locally. State dicts hold float32 tensors only (no BatchNorm
running statistics), so weights can be secret-shared and averaged.

    model = build_model("small_cnn", image_size=64)
    logits = model(torch.zeros(8, 1, 64, 64))        # shape (8, 2)
"""

from __future__ import annotations

import torch
from torch import nn

MODEL_NAMES = ("small_cnn", "resnet18")
NUM_CLASSES = 2
MIN_IMAGE_SIZE = 16


class SmallCNN(nn.Module):
    """Six 3x3 conv/ReLU blocks (8-16-32-64-64-64 channels) with a 2x2 max-pool
    between them, global average pooling and a linear layer to 2 logits: about 98k
    parameters, no normalisation layers. Pooling rounds up, so 28, 64 and 128 px
    inputs all work."""

    def __init__(self, channels: tuple[int, ...] = (8, 16, 32, 64, 64, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for index, out_channels in enumerate(channels):
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True)]
            if index < len(channels) - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, NUM_CLASSES)
        for layer in self.features:
            if isinstance(layer, nn.Conv2d):  # He init: without BatchNorm, the default
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")  # init stalls
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _resnet18() -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=NUM_CLASSES)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def build_model(name: str = "small_cnn", image_size: int = 64) -> nn.Module:
    """A freshly initialised model called `name` (one of MODEL_NAMES).

    `image_size` is accepted for symmetry with the data (both models pool globally
    and work for 28, 64 and 128 px); sizes below 16 px are refused.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    if int(image_size) < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} px, got {image_size}")
    return SmallCNN() if name == "small_cnn" else _resnet18()
