"""VGG-11/13/16/19 in their CIFAR form: 3x3 conv + BatchNorm + ReLU, max-pooling, one 512->10 layer.

As in the paper (and OpenLTH), the convolutional plan is the ImageNet VGG's; the classifier
is a single linear layer on the 512 channels left after global average pooling.
VGG-19 on 3x32x32 inputs has 20,024,000 prunable weights (conv + output).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lth.models.init import glorot_gaussian_
from lth.models.shapes import PLANS  # "M" = 2x2 max-pooling


class VGG(nn.Module):
    """CIFAR VGG of the given ``depth`` (11, 13, 16, 19), or an explicit ``plan`` of widths and "M"."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int = 19,
        plan: Sequence[int | str] | None = None,
        batch_norm: bool = True,
    ):
        super().__init__()
        if plan is None:
            if depth not in PLANS:
                raise ValueError(f"VGG-{depth} is not one of VGG-{', VGG-'.join(map(str, PLANS))}")
            plan = PLANS[depth]
        channels = input_shape[0]
        layers: list[nn.Module] = []
        for spec in plan:
            if spec == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            width = int(spec)
            layers.append(nn.Conv2d(channels, width, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.output = nn.Linear(channels, num_classes)
        glorot_gaussian_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.pool(self.features(x)).flatten(1))
