"""Adam, AdamW and SGD with the mask fused into one compiled update (``optimizer.compile=true``).

By default lth runs PyTorch's fused optimizer and then multiplies the mask into the weights
(:class:`~lth.pruning.MaskEnforcer`): a second pass over every masked tensor per step, 5-10%
of a LeNet-300-100 step on the CPU (BENCHMARKS.md). Here the optimizer's update and the mask
are one function compiled by ``torch.compile`` (Inductor: C++ on the CPU, Triton on CUDA), so
each tensor is read and written once and the mask costs one extra read.

* Same update rules, hyperparameters and state keys as ``torch.optim.Adam``/``AdamW``/``SGD``
  (non-AMSGrad, no dampening), so checkpoints and LR schedulers work as with them. Results
  agree with them up to float rounding, not bit for bit: the compiler may reorder arithmetic.
* Pruned weights are exactly 0.0 after every step (the update is multiplied by the mask);
  with ``mask_gradients`` their gradients are masked first, in the same kernel.
* Cost: one compilation per process and set of parameter shapes (a few seconds for LeNet;
  Inductor caches it on disk), and a C++ compiler on the CPU. Hence off by default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from lth.machine import missing_compiler

MAX_RECOMPILES = 64  # shapes seen by one process (one per model and device); torch's default is 8


def _adam_update(params, grads, exp_avgs, exp_avg_sqs, masks, scalars, beta1: float, beta2: float, eps: float,
                 weight_decay: float, decoupled: bool, mask_gradients: bool):
    # scalars[3i:3i+3] for parameter i: lr / bias_correction1, sqrt(bias_correction2), 1 - lr * weight_decay.
    # They come from the host: computed in the graph, Inductor inlines them into the element-wise
    # loops and evaluates the powers once per element (3x slower for LeNet).
    for i, (p, g, m, v, k) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, masks)):
        if k is not None and mask_gradients:
            g = g * k.to(g.dtype)
        if weight_decay != 0.0:
            if decoupled:  # AdamW
                p.mul_(scalars[3 * i + 2])
            else:
                g = g + weight_decay * p
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / scalars[3 * i + 1]).add_(eps)
        new = p - scalars[3 * i] * (m / denom)
        p.copy_(new if k is None else new * k.to(new.dtype))


def _sgd_update(params, grads, bufs, masks, scalars, momentum: float, weight_decay: float, nesterov: bool,
                mask_gradients: bool):
    lr = scalars[0]
    for i, (p, g, k) in enumerate(zip(params, grads, masks)):
        if k is not None and mask_gradients:
            g = g * k.to(g.dtype)
        if weight_decay != 0.0:
            g = g + weight_decay * p
        if momentum != 0.0:
            buf = bufs[i]
            buf.mul_(momentum).add_(g)  # zero-initialised: the first step gives buf = g, as torch's SGD
            g = g + momentum * buf if nesterov else buf
        new = p - lr * g
        p.copy_(new if k is None else new * k.to(new.dtype))


_compiled: dict[str, object] = {}


def _compiled_update(kind: str):
    if kind not in _compiled:
        import torch._dynamo.config as dynamo_config

        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, MAX_RECOMPILES)
        fn = _adam_update if kind == "adam" else _sgd_update
        _compiled[kind] = torch.compile(fn, fullgraph=True, dynamic=False)
    return _compiled[kind]


class CompiledMaskedOptimizer(torch.optim.Optimizer):
    """``name`` in adam | adamw | sgd over ``params``; ``masks`` pairs (parameter, 0/1 mask on its
    device, any dtype) for the tensors with pruned entries."""

    def __init__(self, params: Iterable[torch.Tensor], name: str, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False,
                 masks: Iterable[tuple[torch.Tensor, torch.Tensor]] = (), mask_gradients: bool = False,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        name = name.lower()
        if name not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer.name={name!r} is not one of adam, adamw, sgd")
        if nesterov and (momentum <= 0.0 or name != "sgd"):
            raise ValueError("nesterov=true needs optimizer.name=sgd and optimizer.momentum > 0")
        if name == "sgd":
            defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        else:
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.name = name
        self.mask_gradients = mask_gradients
        # uint8: one byte per weight for the kernel to read (a float mask made the LeNet step ~1%
        # slower; a bool one is not vectorised by Inductor and was slower still)
        self._masks = {id(p): (m != 0).to(torch.uint8) for p, m in masks}
        self._scalar_buffer: np.ndarray | None = None

    def step(self, closure=None):
        """One update of every parameter with a gradient. Step pre- and post-hooks run as with
        torch's optimizers, but without torch's ``record_function`` around the step: around a
        compiled call it cost about 50 µs, 2% of a LeNet step on the CPU."""
        args, kwargs = (self,), {"closure": closure}
        for hook in (*_global_optimizer_pre_hooks.values(), *self._optimizer_step_pre_hooks.values()):
            result = hook(self, args, kwargs)
            if result is not None:
                args, kwargs = result
        loss = self._update(*args[1:], **kwargs)
        for hook in (*self._optimizer_step_post_hooks.values(), *_global_optimizer_post_hooks.values()):
            hook(self, args, kwargs)
        return loss

    step.hooked = True  # tells torch.optim.Optimizer not to wrap it in its profiling wrapper

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch's, without its ``record_function`` (about 15 µs per call here)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().requires_grad_(False).zero_()

    @torch.no_grad()
    def _update(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            device = params[0].device
            if any(p.device != device for p in params):
                raise RuntimeError("optimizer.compile=true needs all parameters of a group on one device")
            grads = [p.grad for p in params]
            masks = [self._masks.get(id(p)) for p in params]
            lr = float(group["lr"])  # a tensor input, not a constant: schedulers change it without a recompile
            try:
                if self.name == "sgd":
                    bufs = [self._state(p, "momentum_buffer") for p in params] if group["momentum"] != 0.0 else []
                    _compiled_update("sgd")(params, grads, bufs, masks, self._scalars([lr], device),
                                            float(group["momentum"]), float(group["weight_decay"]),
                                            bool(group["nesterov"]), self.mask_gradients)
                else:
                    beta1, beta2 = (float(b) for b in group["betas"])
                    wd = float(group["weight_decay"])
                    scalars = []
                    for p in params:
                        n = self._next_step(p)
                        scalars += [lr / (1 - beta1**n), math.sqrt(1 - beta2**n), 1 - lr * wd]
                    _compiled_update("adam")(
                        params, grads, [self._state(p, "exp_avg") for p in params],
                        [self._state(p, "exp_avg_sq") for p in params], masks, self._scalars(scalars, device),
                        beta1, beta2, float(group["eps"]), wd, self.name == "adamw", self.mask_gradients)
            except torch._dynamo.exc.BackendCompilerFailed as exc:
                reason = missing_compiler(device) or f"{exc.__class__.__name__}: {exc}"
                raise RuntimeError(f"optimizer.compile=true could not compile the optimizer step: {reason}. "
                                   f"Install a C++ compiler (CPU) or Triton (CUDA), or set optimizer.compile=false") from None
        return loss

    def _state(self, p: torch.Tensor, key: str) -> torch.Tensor:
        state = self.state[p]
        if key not in state:
            state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state[key]

    def _next_step(self, p: torch.Tensor) -> float:
        """Count one more step for ``p``: a Python float in the state (a tensor from torch's Adam
        is read once; torch's Adam converts ours back when it loads it)."""
        state = self.state[p]
        n = float(state.get("step", 0.0)) + 1
        state["step"] = n
        return n

    def _scalars(self, values: list[float], device: torch.device) -> torch.Tensor:
        """``values`` as a float32 tensor on ``device``. On the CPU it is a reused buffer written
        through NumPy (a fresh tensor per step made the compiled call about 40 µs slower); on CUDA,
        pinned memory copied without blocking (PyTorch's pinned-memory cache keeps a block until
        its copy has run, so the buffer is never overwritten in flight)."""
        if device.type == "cuda":
            return torch.tensor(values, dtype=torch.float32, pin_memory=True).to(device, non_blocking=True)
        if device.type != "cpu":
            return torch.tensor(values, dtype=torch.float32).to(device)
        buf = self._scalar_buffer
        if buf is None or buf.shape != (len(values),):
            buf = self._scalar_buffer = np.empty(len(values), dtype=np.float32)
        buf[:] = values
        return torch.from_numpy(buf)
