"""Masks, magnitude and random pruning, and the mask-enforcing optimizer hook."""

from lth.pruning.hook import MaskEnforcer
from lth.pruning.magnitude import prune_global, prune_layerwise
from lth.pruning.mask import Mask
from lth.pruning.prunable import PrunableTensor, prunable_tensors
from lth.pruning.random_prune import random_mask_like

__all__ = [
    "Mask",
    "MaskEnforcer",
    "PrunableTensor",
    "prunable_tensors",
    "prune_global",
    "prune_layerwise",
    "random_mask_like",
]
