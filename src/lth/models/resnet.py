"""The CIFAR ResNets of He et al. (2016): depth 6n+2, three stages of 16, 32, 64 filters.

ResNet-20 (n=3) is the paper's "Resnet-18". Convolutions have no biases and are followed by
BatchNorm. Where a block changes the shape (stride 2, more filters) its shortcut is a 1x1
convolution + BatchNorm, held in a module named ``shortcut`` so that the glob ``*shortcut*``
exempts those weights from pruning. ``init``: ``glorot`` (the 2019 paper's Gaussian Glorot, the default) or
``openlth`` (Kaiming normal, BatchNorm scale uniform in [0, 1]: OpenLTH's ``cifar_resnet_20``, the code of
the 2020 and 2021 papers).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lth.models.init import initialise_
from lth.models.shapes import check_init


class BasicBlock(nn.Module):
    def __init__(self, f_in: int, f_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        if stride != 1 or f_in != f_out:
            self.shortcut = nn.Sequential(nn.Conv2d(f_in, f_out, 1, stride=stride, bias=False), nn.BatchNorm2d(f_out))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet of ``depth`` = 6n+2 (20, 32, 44, 56, 110) with base ``width`` 16 (16-32-64)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, depth: int = 20, width: int = 16,
                 init: str = "glorot"):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        check_init(init)
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(input_shape[0], width, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks: list[nn.Module] = []
        f_in = width
        for stage, f_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(f_in, f_out, stride))
                f_in = f_out
        self.blocks = nn.Sequential(*blocks)
        self.output = nn.Linear(f_in, num_classes)
        initialise_(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.output(out)
