"""The random-pruning control: a random mask with the ticket's per-tensor counts."""

from __future__ import annotations

import torch

from lth.pruning.mask import Mask


def random_mask_like(mask: Mask, seed: int) -> Mask:
    """Keep, in each tensor, as many randomly chosen weights as ``mask`` keeps there."""
    gen = torch.Generator().manual_seed(seed)
    out = Mask()
    for name, m in mask.items():
        keep = int(m.sum())
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=gen)[:keep]] = True
        out[name] = flat.view_as(m)
    return out
