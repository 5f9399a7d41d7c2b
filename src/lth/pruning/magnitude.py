"""Magnitude pruning of the remaining weights: layer-wise and global.

Counts: a round at rate ``p`` removes ``round(p * r)`` of the ``r`` weights still
alive (per tensor for layer-wise, over all non-exempt tensors for global), so
after ``n`` rounds about ``(1 - p)^n`` remain. Ties in magnitude are broken by a
stable sort: among equal magnitudes the weight that comes first (tensor order,
then flat index) is pruned first, so the count removed is always exact.
"""

from __future__ import annotations

import torch

from lth.pruning.mask import Mask
from lth.pruning.prunable import prune_count


def _smallest_alive(scores: torch.Tensor, alive: torch.Tensor, k: int) -> torch.Tensor:
    """Flat bool tensor: True for the ``k`` alive entries of smallest score."""
    pruned = torch.zeros_like(alive)
    if k <= 0:
        return pruned
    alive_idx = alive.nonzero().squeeze(1)
    alive_scores = scores[alive_idx]
    if k >= len(alive_idx):
        pruned[alive_idx] = True
        return pruned
    # Selection, not a full sort (20M weights in VGG-19): everything below the k-th smallest
    # score, then the earliest of the scores equal to it, as a stable sort would pick.
    threshold = torch.kthvalue(alive_scores, k).values
    chosen = alive_scores < threshold
    ties = (alive_scores == threshold).nonzero().squeeze(1)
    chosen[ties[: k - int(chosen.sum())]] = True
    pruned[alive_idx[chosen]] = True
    return pruned


def prune_layerwise(mask: Mask, weights: dict[str, torch.Tensor], rates: dict[str, float]) -> Mask:
    """Prune ``rates[name]`` of each tensor's remaining weights by magnitude (missing = 0)."""
    new = Mask()
    for name, m in mask.items():
        rate = rates.get(name, 0.0)
        flat = m.flatten()
        k = prune_count(rate, int(flat.sum()))
        pruned = _smallest_alive(weights[name].detach().abs().flatten().cpu().float(), flat, k)
        new[name] = (flat & ~pruned).view_as(m)
    return new


def prune_smallest(mask: Mask, scores: dict[str, torch.Tensor], count: int) -> Mask:
    """Prune the ``count`` alive weights of smallest score over the tensors of ``scores`` together
    (one threshold); the other tensors of ``mask`` are kept as they are."""
    new = Mask({name: m.clone() for name, m in mask.items()})
    names = list(scores)
    if not names:
        return new
    alive = torch.cat([mask[n].flatten().cpu() for n in names])
    flat = torch.cat([scores[n].detach().flatten().cpu() for n in names])
    pruned = _smallest_alive(flat, alive, count)
    offset = 0
    for n in names:
        size = mask[n].numel()
        new[n] = (alive[offset : offset + size] & ~pruned[offset : offset + size]).view_as(mask[n])
        offset += size
    return new


def prune_global(mask: Mask, weights: dict[str, torch.Tensor], rate: float, names: list[str]) -> Mask:
    """Prune ``rate`` of the remaining weights of ``names`` together, by one magnitude threshold."""
    alive = sum(int(mask[n].sum()) for n in names)
    return prune_smallest(mask, {n: weights[n].detach().abs().float() for n in names}, prune_count(rate, alive))
