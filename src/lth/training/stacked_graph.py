"""The stacked training step captured in a CUDA graph: one launch per step.

A LeNet step is about a hundred small kernels whose launch latency, not arithmetic, sets the
speed. Captured once (forward, backward, optimizer update and mask multiply) and replayed, the
step is one graph launch; the data is copied into the graph's static input tensors first.

Capturing needs the optimizer's state to exist and the kernels warmed up, which takes a few real
steps. Those are taken on the same tensors and then undone (:func:`primed`): the parameters and
the optimizer state are restored to what they were before, a state created by the warm-up set
to the zeros a fresh optimizer starts from (Adam's moments and step count, SGD's momentum
buffer: with torch's default dampening 0 a zero buffer gives the first step's ``buf = grad``).
So no step is taken twice and none is skipped (tested on the CPU, where the same code runs).

The learning rate is a number inside the graph: the graph is captured again when it changes
(at a milestone). Iterations whose rate changes often (a warm-up) run eagerly.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from lth.training.stacked_steps import StackedSteps

log = logging.getLogger("lth")

WARMUP_STEPS = 3  # eager steps before a capture (side stream), undone afterwards
MIN_CONSTANT = 20  # capture only when the learning rate stays the same for at least this many steps


@contextlib.contextmanager
def primed(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], buffers: list[torch.Tensor]):
    """Steps taken inside this block are undone at its end, in place (tensor identity is kept)."""
    saved_params = [p.detach().clone() for p in params]
    saved_buffers = [b.clone() for b in buffers]
    saved_state = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                   for p, s in optimizer.state.items()}
    try:
        yield
    finally:
        with torch.no_grad():
            for p, v in zip(params, saved_params):
                p.copy_(v)
            for b, v in zip(buffers, saved_buffers):
                b.copy_(v)
            for p, state in optimizer.state.items():
                before = saved_state.get(p, {})
                for k, v in state.items():
                    if not torch.is_tensor(v):
                        continue
                    if k in before:
                        v.copy_(before[k])
                    else:
                        v.zero_()
        optimizer.zero_grad(set_to_none=True)


class GraphedSteps(StackedSteps):
    def __init__(self, *args, rate_stays=lambda iteration: True):
        super().__init__(*args)
        self.rate_stays = rate_stays  # whether the learning rate stays the same from this iteration on
        for group in self.optimizer.param_groups:
            if "capturable" in group:
                group["capturable"] = True  # Adam/AdamW: step count on the device, no host sync
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key = None
        self.static: tuple | None = None
        self.captures = 0
        self.eager_steps = 0
        self.failed: str | None = None  # why capturing failed (then every step is eager)

    def run(self, x, y, shared: bool, iteration: int) -> torch.Tensor:
        lr = self.optimizer.param_groups[0]["lr"]
        key = (lr, tuple(x.shape), tuple(y.shape), shared)
        if key != self.key:
            if self.failed or not self.rate_stays(iteration):
                self.eager_steps += 1
                return self.eager(x, y, shared)
            try:
                self.capture(x, y, shared, key)
            except RuntimeError as exc:  # an operation that cannot be captured: train on, eagerly
                self.failed = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log.warning("the stacked training step could not be captured in a CUDA graph (%s); "
                            "training eagerly", self.failed)
                self.graph, self.key = None, None
                torch.cuda.synchronize()
                self.eager_steps += 1
                return self.eager(x, y, shared)
        sx, sy, losses = self.static
        sx.copy_(x)
        sy.copy_(y)
        self.graph.replay()
        return losses

    def capture(self, x, y, shared: bool, key) -> None:
        self.graph = None
        params = list(self.net.parameters())
        buffers = list(self.net.buffers())
        sx, sy = x.clone(), y.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with primed(self.optimizer, params, buffers):
            with torch.cuda.stream(stream):
                for _ in range(WARMUP_STEPS):
                    self.eager(sx, sy, shared)
            torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            losses = self.eager(sx, sy, shared)
        self.graph, self.static, self.key = graph, (sx, sy, losses), key
        self.captures += 1


def make_steps(net, optimizer, masks, mask_gradients: bool, cuda_graph: bool, rate_stays) -> StackedSteps:
    """The stack's step: replayed from a CUDA graph where asked for on a CUDA device, else eager."""
    if cuda_graph and next(net.parameters()).device.type == "cuda":
        return GraphedSteps(net, optimizer, masks, mask_gradients, rate_stays=rate_stays)
    return StackedSteps(net, optimizer, masks, mask_gradients)
