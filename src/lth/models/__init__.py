"""Architectures of the paper. Each is built from its config with the data's shape (imported on first use:
:mod:`lth.models.shapes` needs no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lth import lazy

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from torch import nn


def build_model(arch_cfg: DictConfig, input_shape: Sequence[int], num_classes: int, seed: int) -> nn.Module:
    """Instantiate ``arch_cfg`` (a ``_target_`` config) with initialisation drawn from ``seed``."""
    import hydra.utils
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return hydra.utils.instantiate(arch_cfg, input_shape=tuple(input_shape), num_classes=num_classes)


_WHERE = {"ConvNet": "conv", "LeNet": "lenet", "ResNet": "resnet", "ResNet50": "resnet50", "VGG": "vgg"}
__all__ = ["build_model", *_WHERE]
__getattr__ = lazy(__name__, _WHERE)
