"""Masks, magnitude and random pruning, the mask-enforcing optimizer hook, and the compiled
optimizer that applies the mask itself (``optimizer.compile=true``)."""

from lth.pruning.compiled_optimizer import CompiledMaskedOptimizer
from lth.pruning.hook import MaskEnforcer
from lth.pruning.magnitude import prune_global, prune_layerwise
from lth.pruning.mask import Mask
from lth.pruning.prunable import PrunableTensor, prunable_tensors
from lth.pruning.random_prune import random_mask_like

__all__ = [
    "CompiledMaskedOptimizer",
    "Mask",
    "MaskEnforcer",
    "PrunableTensor",
    "prunable_tensors",
    "prune_global",
    "prune_layerwise",
    "random_mask_like",
]
