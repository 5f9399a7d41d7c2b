"""Architectures of the paper. Each is built from its config with the data's shape."""

from __future__ import annotations

from collections.abc import Sequence

import hydra.utils
import torch
from omegaconf import DictConfig
from torch import nn

from lth.models.conv import ConvNet
from lth.models.lenet import LeNet
from lth.models.resnet import ResNet
from lth.models.resnet50 import ResNet50
from lth.models.vgg import VGG


def build_model(arch_cfg: DictConfig, input_shape: Sequence[int], num_classes: int, seed: int) -> nn.Module:
    """Instantiate ``arch_cfg`` (a ``_target_`` config) with initialisation drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return hydra.utils.instantiate(arch_cfg, input_shape=tuple(input_shape), num_classes=num_classes)


__all__ = ["ConvNet", "LeNet", "ResNet", "ResNet50", "VGG", "build_model"]
