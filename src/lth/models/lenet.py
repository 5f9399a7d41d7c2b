"""LeNet-300-100: a fully-connected network (784-300-100-10 on MNIST)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lth.models.init import glorot_gaussian_


class LeNet(nn.Module):
    """Fully-connected ReLU network; ``hidden=(300, 100)`` is the paper's LeNet-300-100.

    ``dropout=p > 0`` (the paper's dropout experiments, Frankle & Carbin 2019 Section 4) drops
    each hidden layer's activations after its ReLU with probability ``p`` in train mode, i.e.
    the inputs of the 2nd hidden layer and of the output layer; never the image itself. With
    ``dropout=0.0`` (the default) no Dropout module is built. Dropout has no parameters: the
    weights and their initial values for a seed are the same whatever ``dropout`` is.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (300, 100),
        dropout: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout}")
        self.input_shape = tuple(input_shape)
        widths = [math.prod(input_shape), *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.output = nn.Linear(widths[-1], num_classes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        glorot_gaussian_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
            if self.dropout is not None:
                x = self.dropout(x)
        return self.output(x)
