"""small_cnn: a six-block convolutional network of about 98k parameters, no normalisation."""

from __future__ import annotations

import torch
from torch import nn

from common.models import NUM_CLASSES, register_model


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


@register_model("small_cnn")
def small_cnn() -> nn.Module:
    return SmallCNN()
