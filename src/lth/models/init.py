"""Initialisations: the 2019 paper's Gaussian Glorot, and OpenLTH's (the follow-ups' code)."""

from __future__ import annotations

from torch import nn

from lth.models.shapes import check_init


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


def openlth_(model: nn.Module) -> nn.Module:
    """OpenLTH's ``kaiming_normal`` + ``uniform`` BatchNorm (the code of Frankle et al. 2020 and 2021):
    conv and linear weights ~ N(0, 2/fan_in), biases left at PyTorch's default; BatchNorm scale ~ U(0, 1),
    shift 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.0, 1.0)
            nn.init.zeros_(module.bias)
    return model


def initialise_(model: nn.Module, init: str) -> nn.Module:
    """``model`` initialised by ``init`` (one of :data:`lth.models.shapes.INITS`)."""
    check_init(init)
    return glorot_gaussian_(model) if init == "glorot" else openlth_(model)
