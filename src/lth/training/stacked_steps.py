"""One training step of every network of a stack, eager: forward, backward, update, masks re-applied.

:class:`StackedSteps` is what :class:`lth.training.stacked.StackedModule` calls each iteration; on
CUDA :class:`lth.training.stacked_graph.GraphedSteps` replays the same step from a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lth.training.stacked import StackedNetworks


class StackedSteps:
    """One training step of every network (eager), and the state it must keep exact."""

    def __init__(self, net: StackedNetworks, optimizer: torch.optim.Optimizer, masks: dict[int, torch.Tensor],
                 mask_gradients: bool):
        self.net = net
        self.optimizer = optimizer
        self.params = [net.stacked[i] for i in masks]  # only tensors with a pruned entry in some network
        self.masks = list(masks.values())
        self.mask_gradients = mask_gradients
        self.step_fn: Callable = lambda: type(optimizer).step(optimizer)

    def run(self, x: torch.Tensor, y: torch.Tensor, shared: bool, iteration: int) -> torch.Tensor:
        """One step of every network on batch ``x, y`` at ``iteration``; their losses."""
        return self.eager(x, y, shared)

    def eager(self, x: torch.Tensor, y: torch.Tensor, shared: bool) -> torch.Tensor:
        losses = self.net.losses(x, y, shared)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        with torch.no_grad():
            if self.mask_gradients and self.params:
                torch._foreach_mul_([p.grad for p in self.params], self.masks)
            self.step_fn()
            if self.params:
                torch._foreach_mul_(self.params, self.masks)  # pruned weights back to exactly 0
        return losses.detach()

    @torch.no_grad()
    def verify(self) -> None:
        """Raise if any pruned weight of any network is not exactly 0 (NaN/inf are divergence's)."""
        for p, m in zip(self.params, self.masks):
            pruned = p[(m == 0).to(p.device)]  # after fit Lightning may have moved the weights back to the CPU
            moved = int(torch.count_nonzero(pruned[pruned.isfinite()]))
            if moved:
                raise RuntimeError(f"{moved} pruned weights of a stacked network are no longer 0")
