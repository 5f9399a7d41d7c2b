"""The paper's initialisation: Gaussian Glorot for conv and linear weights."""

from __future__ import annotations

from torch import nn


def glorot_gaussian_(model: nn.Module) -> nn.Module:
    """Weights ~ N(0, 2/(fan_in+fan_out)); biases 0; BatchNorm scale 1, shift 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model
