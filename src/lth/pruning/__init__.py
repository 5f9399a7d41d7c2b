"""Masks, magnitude and random pruning, the mask-enforcing optimizer hook, and the compiled
optimizer that applies the mask itself (``optimizer.compile=true``); imported on first use
(:mod:`lth.pruning.prunable` needs no torch)."""

from lth import lazy

_WHERE = {"CompiledMaskedOptimizer": "compiled_optimizer", "Mask": "mask", "MaskEnforcer": "hook",
          "PrunableTensor": "prunable", "prunable_tensors": "prunable", "prune_global": "magnitude",
          "prune_layerwise": "magnitude", "random_mask_like": "random_prune"}
__all__ = sorted(_WHERE)
__getattr__ = lazy(__name__, _WHERE)
