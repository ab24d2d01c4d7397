"""resnet18: torchvision's ResNet-18 with a one-channel stem and two logits."""

from __future__ import annotations

from torch import nn

from common.models import NUM_CLASSES, register_model


@register_model("resnet18")
def resnet18() -> nn.Module:
    from torchvision.models import resnet18 as torchvision_resnet18

    model = torchvision_resnet18(weights=None, num_classes=NUM_CLASSES)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model
