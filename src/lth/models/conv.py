"""Conv-2, Conv-4 and Conv-6: the paper's scaled-down VGG-style networks for CIFAR-10.

Pairs of 3x3 convolutions (padding 1, ReLU), each pair followed by 2x2 max-pooling, with
64, 128 and 256 filters for the first, second and third pair; then fully-connected
layers 256, 256 and the output layer (Frankle & Carbin 2019, Figure 2).
On 3x32x32 inputs the prunable weights are 4,300,992 (Conv-2), 2,425,024 (Conv-4)
and 2,261,184 (Conv-6).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lth.models.init import glorot_gaussian_
from lth.models.shapes import PAIR_WIDTHS


class ConvNet(nn.Module):
    """``depth`` convolutions (2, 4 or 6) in pairs, then ``hidden`` fully-connected layers and the output.

    ``dropout=p > 0`` (the paper's dropout experiments, Frankle & Carbin 2019 Section 4) drops
    each hidden fully-connected layer's activations after its ReLU with probability ``p`` in
    train mode, i.e. the inputs of the second fc layer and of the output layer; the
    convolutional features are not dropped. With ``dropout=0.0`` (the default) no Dropout module
    is built. Dropout has no parameters: the weights and their initial values for a seed are the
    same whatever ``dropout`` is.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int = 2,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0,
    ):
        super().__init__()
        if depth not in (2, 4, 6):
            raise ValueError(f"Conv-{depth} is not one of Conv-2, Conv-4, Conv-6")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout}")
        self.input_shape = tuple(input_shape)
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for width_out in PAIR_WIDTHS[: depth // 2]:
            for _ in range(2):
                layers += [nn.Conv2d(channels, width_out, 3, padding=1), nn.ReLU(inplace=True)]
                channels = width_out
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        self.features = nn.Sequential(*layers)
        widths = [channels * height * width, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.output = nn.Linear(widths[-1], num_classes)  # last linear in module order: the "output" kind
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        glorot_gaussian_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
            if self.dropout is not None:
                x = self.dropout(x)
        return self.output(x)
