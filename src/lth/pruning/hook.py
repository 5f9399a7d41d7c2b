"""The mask-aware optimizer hook: pruned weights stay exactly 0.0 whatever the optimizer.

After every ``optimizer.step()`` the mask is multiplied into the weights (an optimizer step
post-hook running one fused ``torch._foreach_mul_`` over all masked tensors). Whatever the
optimizer did to a pruned weight (momentum, weight decay, Adam's moments), every forward
pass sees it at exactly 0.0. For element-wise optimizers (Adam, AdamW, SGD with any momentum
and weight decay) the surviving weights then follow exactly the trajectory they would follow
if the pruned weights did not exist, bit for bit (tested).

Optionally (``mask_gradients=True``, config ``mask_gradients=true``) the gradients of pruned
weights are zeroed as well before the optimizer uses them, so that its state for them stays
0 (needed only for optimizers that mix entries, e.g. global-norm clipping, LARS). The hook
then wraps the step's closure when there is one: Lightning's automatic optimization
computes the gradients inside ``optimizer.step(closure)``, after step pre-hooks have run.
This is off by default: the survivors' trajectory is unchanged, it is a second pass per step,
and with the multi-tensor Adam the zero moments made ``torch._foreach_sqrt`` about 13x slower
on the CPU measured here (BENCHMARKS.md).
"""

from __future__ import annotations

import torch
from torch import nn

from lth.pruning.mask import Mask


class MaskEnforcer:
    def __init__(self, model: nn.Module, mask: Mask, mask_gradients: bool = False):
        params = dict(model.named_parameters())
        # Only tensors that have pruned entries need enforcing.
        self.names = [n for n, m in mask.items() if not bool(m.all())]
        self.params = [params[n] for n in self.names]
        self.masks = [mask[n].to(params[n].device, params[n].dtype) for n in self.names]
        self.mask_gradients = mask_gradients

    @torch.no_grad()
    def zero_masked_grads(self) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            masks = [m for p, m in zip(self.params, self.masks) if p.grad is not None]
            torch._foreach_mul_(grads, masks)

    @torch.no_grad()
    def apply_to_weights(self, *_args, **_kwargs) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)

    def before_step(self, optimizer, args: tuple, kwargs: dict):
        """Step pre-hook: mask the gradients, or wrap the closure that will compute them.
        (``args`` are ``step``'s positional arguments, the optimizer itself first.)"""
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if closure is None:
            self.zero_masked_grads()
            return None

        def masked_closure():
            loss = closure()
            self.zero_masked_grads()
            return loss

        if "closure" in kwargs:
            return args, {**kwargs, "closure": masked_closure}
        return (args[0], masked_closure, *args[2:]), kwargs

    def attach(self, optimizer: torch.optim.Optimizer) -> "MaskEnforcer":
        if self.params:
            if self.mask_gradients:
                optimizer.register_step_pre_hook(self.before_step)
            optimizer.register_step_post_hook(self.apply_to_weights)
        return self

    @torch.no_grad()
    def verify(self) -> None:
        """Raise if any pruned weight is not exactly 0 (NaN/inf are left to divergence detection:
        no multiply by 0 can hold them)."""
        for name, p, m in zip(self.names, self.params, self.masks):
            pruned = p[m == 0]
            moved = int(torch.count_nonzero(pruned[pruned.isfinite()]))
            if moved:
                raise RuntimeError(f"{moved} pruned weights of {name} are no longer 0; the mask was not enforced")
