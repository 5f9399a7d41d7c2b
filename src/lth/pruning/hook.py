"""The mask-aware optimizer hook: pruned weights stay exactly 0.0 whatever the optimizer.

Before each ``optimizer.step()`` the gradients of masked weights are zeroed; after
it the mask is multiplied into the weights again (this covers weight decay,
momentum and Adam's running moments, which can move a zero weight). Both use
PyTorch's optimizer step hooks and fused ``torch._foreach_mul_`` over all masked
tensors, so the cost is two fused kernels per step and no per-forward work
(unlike ``torch.nn.utils.prune``).
"""

from __future__ import annotations

import torch
from torch import nn

from lth.pruning.mask import Mask


class MaskEnforcer:
    def __init__(self, model: nn.Module, mask: Mask):
        params = dict(model.named_parameters())
        # Only tensors that have pruned entries need enforcing.
        names = [n for n, m in mask.items() if not bool(m.all())]
        self.params = [params[n] for n in names]
        self.masks = [mask[n].to(params[n].device, params[n].dtype) for n in names]
        self._handles: list = []

    @torch.no_grad()
    def zero_masked_grads(self, *_args, **_kwargs) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            masks = [m for p, m in zip(self.params, self.masks) if p.grad is not None]
            torch._foreach_mul_(grads, masks)

    @torch.no_grad()
    def apply_to_weights(self, *_args, **_kwargs) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)

    def attach(self, optimizer: torch.optim.Optimizer) -> "MaskEnforcer":
        if self.params:
            self._handles.append(optimizer.register_step_pre_hook(self.zero_masked_grads))
            self._handles.append(optimizer.register_step_post_hook(self.apply_to_weights))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
