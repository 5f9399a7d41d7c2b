"""LeNet-300-100: a fully-connected network (784-300-100-10 on MNIST)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lth.models.init import glorot_gaussian_


class LeNet(nn.Module):
    """Fully-connected ReLU network; ``hidden=(300, 100)`` is the paper's LeNet-300-100."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (300, 100)):
        super().__init__()
        widths = [math.prod(input_shape), *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.output = nn.Linear(widths[-1], num_classes)
        glorot_gaussian_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.output(x)
