"""Batch augmentation on the training device: random crop with 4-pixel zero padding + horizontal flip.

Fully vectorised (one gather for the whole batch, no per-sample Python loop); every random
number comes from the given ``torch.Generator``, so a batch's augmentation is a pure function
of the generator's seed (see :class:`lth.data.stream.BatchStream`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PADDING = 4


def random_crop_flip(x: torch.Tensor, gen: torch.Generator, padding: int = PADDING) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W): an HxW crop of its zero-padded self, flipped with probability 1/2.

    Zero padding is applied to the (normalised) images, as torchvision's ``RandomCrop(32, padding=4)``
    does before normalisation up to the constant the padding maps to.
    """
    n, _, h, w = x.shape
    device = x.device
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=device)
    flip = torch.rand(n, generator=gen, device=device) < 0.5
    rows = dy[:, None] + torch.arange(h, device=device)  # (N, H)
    cols_fwd = torch.arange(w, device=device)
    cols = torch.where(flip[:, None], cols_fwd.flip(0), cols_fwd) + dx[:, None]  # (N, W)
    batch = torch.arange(n, device=device)[:, None, None]
    # (N, H, W, C) gather from padded (N, C, H', W') -> back to (N, C, H, W)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()
