"""The mask-aware optimizer hook: pruned weights stay exactly 0.0 whatever the optimizer.

The optimizer never sees a pruned weight. For every masked tensor W the optimizer is given,
in W's place, a 1-D parameter holding only W's surviving entries (``survivors``); around
each ``optimizer.step()`` the hook

* before: gathers W's gradient at the survivors into their ``.grad`` (and drops W's), so the
  pruned weights' gradients never reach the optimizer: it keeps no state for them at all;
* after: scatters the updated survivors back into W. W's pruned entries are never written,
  so they stay exactly 0.0 (set once when the hook is attached).

This is DESIGN.md's "zero the masked gradients before the step and re-apply the mask after
it", done by not computing the pruned part of the update instead of computing and discarding
it. For the element-wise optimizers lth offers (Adam, AdamW, SGD with any momentum, Nesterov
and weight decay) the survivors follow exactly the trajectory they would follow if the pruned
weights did not exist (tested against a dense optimizer with masked gradients and weights);
optimizers or clipping that mix entries see only the survivors, as they should. At 10% of
weights remaining the optimizer step and its state shrink tenfold, which more than pays for
the gather and scatter (BENCHMARKS.md: LeNet-300-100 trains faster masked than dense).

The model's parameters stay the dense tensors (state_dict, pruning, rewinding and DDP's
gradient all-reduce see nothing unusual); only the optimizer's parameter list differs:
build it from ``enforcer.optimizer_params(model.parameters())``.
"""

from __future__ import annotations

import torch
from torch import nn

from lth.pruning.mask import Mask


class MaskEnforcer:
    def __init__(self, model: nn.Module, mask: Mask):
        params = dict(model.named_parameters())
        # Only tensors that have pruned entries need enforcing.
        self.names = [n for n, m in mask.items() if not bool(m.all())]
        self.weights = [params[n] for n in self.names]
        for name, w in zip(self.names, self.weights):
            if not w.is_contiguous():
                raise ValueError(f"{name}: MaskEnforcer needs contiguous weights (got strides {w.stride()})")
        self.indices = [mask[n].to(w.device).reshape(-1).nonzero().squeeze(1) for n, w in zip(self.names, self.weights)]
        self.survivors = [nn.Parameter(w.detach().reshape(-1).index_select(0, i)) for w, i in zip(self.weights, self.indices)]
        self._survivors_of = {id(w): s for w, s in zip(self.weights, self.survivors)}
        self.zero_pruned_weights()

    def optimizer_params(self, params) -> list[torch.Tensor]:
        """``params`` (in order) with each masked weight replaced by its survivors."""
        return [self._survivors_of.get(id(p), p) for p in params]

    @torch.no_grad()
    def zero_pruned_weights(self) -> None:
        for w, s, i in zip(self.weights, self.survivors, self.indices):
            w.zero_().view(-1).index_copy_(0, i, s)

    @torch.no_grad()
    def load_survivors(self) -> None:
        """Copy the survivors from the weights (after anything that loaded the weights, e.g. a
        checkpoint restore), and zero the pruned entries."""
        for w, s, i in zip(self.weights, self.survivors, self.indices):
            torch.index_select(w.view(-1), 0, i, out=s.data)
        self.zero_pruned_weights()

    @torch.no_grad()
    def gather_gradients(self, *_args, **_kwargs) -> None:
        """The survivors' gradients from the weights' (which are then dropped, so that the next
        backward starts from none). Does nothing for a weight without a gradient."""
        for w, s, i in zip(self.weights, self.survivors, self.indices):
            if w.grad is not None:
                s.grad = w.grad.reshape(-1).index_select(0, i)
                w.grad = None

    @torch.no_grad()
    def scatter_survivors(self, *_args, **_kwargs) -> None:
        for w, s, i in zip(self.weights, self.survivors, self.indices):
            w.view(-1).index_copy_(0, i, s)

    def before_step(self, optimizer, args: tuple, kwargs: dict):
        """Step pre-hook: gather the gradients, or, when ``step`` is given a closure that will
        compute them (Lightning's automatic optimization), gather right after it runs.
        (``args`` are ``step``'s positional arguments, the optimizer itself first.)"""
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if closure is None:
            self.gather_gradients()
            return None

        def closure_then_gather():
            loss = closure()
            self.gather_gradients()
            return loss

        if "closure" in kwargs:
            return args, {**kwargs, "closure": closure_then_gather}
        return (args[0], closure_then_gather, *args[2:]), kwargs

    def attach(self, optimizer: torch.optim.Optimizer) -> "MaskEnforcer":
        """Gather before and scatter after every ``optimizer.step()``. The optimizer must have been
        built over ``optimizer_params(...)``. (Callers that need the gradients in the optimizer
        before ``step()`` itself, e.g. for AMP's unscaling, call ``gather_gradients()`` first.)"""
        mine = {id(s) for s in self.survivors}
        given = {id(p) for g in optimizer.param_groups for p in g["params"]}
        if not mine <= given:
            raise ValueError("the optimizer was not built over MaskEnforcer.optimizer_params(...): "
                             "it would update pruned weights")
        if self.survivors:
            optimizer.register_step_pre_hook(self.before_step)
            optimizer.register_step_post_hook(self.scatter_survivors)
        return self

    @torch.no_grad()
    def verify(self) -> None:
        """Raise if any pruned weight is not exactly 0 (NaN/inf are left to divergence detection)."""
        for name, w, i in zip(self.names, self.weights, self.indices):
            pruned = w.detach().reshape(-1).index_fill(0, i, 0)
            moved = int(torch.count_nonzero(pruned[pruned.isfinite()]))
            if moved:
                raise RuntimeError(f"{moved} pruned weights of {name} are no longer 0; the mask was not enforced")

    @staticmethod
    def compact_optimizer_state(state: dict, params: list[tuple[str, nn.Parameter]], mask: Mask) -> dict:
        """An optimizer ``state_dict`` saved by a dense optimizer over ``params`` (lth before the
        survivors-only optimizer), with each masked weight's per-entry state cut to its survivors,
        so that a mid-round checkpoint written by an older lth resumes. Compact state passes
        unchanged; ``state`` itself is not modified."""
        per_index = dict(state["state"])
        for index, (name, p) in enumerate(params):
            m = mask.get(name)
            if m is None or bool(m.all()) or index not in per_index:
                continue
            per_index[index] = {
                key: value.reshape(-1)[m.reshape(-1).to(value.device)]
                if torch.is_tensor(value) and value.shape == p.shape else value
                for key, value in per_index[index].items()
            }
        return {**state, "state": per_index}
