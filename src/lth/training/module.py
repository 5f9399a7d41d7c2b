"""The LightningModule: one network trained for one round, with the mask enforced by the optimizer."""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.strategies import SingleDeviceStrategy
from torch import nn

from lth.training.lean_trainer import NoProfiler
from lth.pruning import CompiledMaskedOptimizer, Mask, MaskEnforcer
from lth.training.schedule import LRSchedule


FUSED_DEVICES = ("cpu", "cuda")  # where torch has fused Adam/AdamW/SGD kernels (lth's trainer=cpu|gpu)


@dataclass(frozen=True)
class OptimizerSettings:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    compile: bool = False  # optimizer.compile: the update and the mask in one compiled function

    def build(self, params, masks=(), mask_gradients: bool = False) -> torch.optim.Optimizer:
        """The optimizer over the tensors ``params``.

        Default: torch's, with PyTorch's fused implementation (one kernel per tensor for the whole
        update) on CPU and CUDA, else the multi-tensor ``foreach`` one (torch only refuses an
        unsupported device at the first step, so it is decided here); for LeNet on CPU the fused
        Adam step made training about 1.5x faster (BENCHMARKS.md). ``masks`` is then ignored: the
        caller attaches a ``MaskEnforcer``. With ``compile``: a ``CompiledMaskedOptimizer`` that
        applies ``masks`` (pairs of parameter and 0/1 mask) inside its update."""
        if self.compile:
            return CompiledMaskedOptimizer(params, self.name, self.lr, self.momentum, self.weight_decay, self.nesterov,
                                           masks=masks, mask_gradients=mask_gradients)
        name = self.name.lower()
        if name == "adam":
            cls, kwargs = torch.optim.Adam, dict(lr=self.lr, weight_decay=self.weight_decay)
        elif name == "adamw":
            cls, kwargs = torch.optim.AdamW, dict(lr=self.lr, weight_decay=self.weight_decay)
        elif name == "sgd":
            cls, kwargs = torch.optim.SGD, dict(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                                nesterov=self.nesterov)
        else:
            raise ValueError(f"optimizer.name={self.name!r} is not one of adam, adamw, sgd")
        params = list(params)
        if all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params):
            return cls(params, fused=True, **kwargs)
        return cls(params, foreach=True, **kwargs)


class LotteryModule(pl.LightningModule):
    """Trains ``model`` from its current weights with ``mask`` kept exactly at zero.

    Iterations are counted absolutely: a round rewound to ``start_iteration`` K runs
    iterations K..``end_iteration`` with the learning rate schedule of those iterations.

    Each Lightning batch is a group of consecutive batches (``BatchStream(group=k)``), trained
    one optimizer step each with Lightning's manual optimization: ``trainer.global_step`` still
    counts optimizer steps, and the results are bit-identical for any group size (tested), but
    Lightning's per-batch loop runs once per group. For LeNet-size networks that loop costs
    more than the step itself (BENCHMARKS.md). The LR scheduler is stepped after every
    optimizer step, as in automatic optimization with ``interval="step"``.

    Nothing in the step synchronises with the device: the loss is kept as a tensor.
    """

    def __init__(
        self,
        model: nn.Module,
        mask: Mask | None,
        optimizer: OptimizerSettings,
        schedule: LRSchedule,
        start_iteration: int = 0,
        end_iteration: int = 1,
        mask_gradients: bool = False,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.mask = mask
        self.optimizer_settings = optimizer
        self.schedule = schedule
        self.start_iteration = start_iteration
        self.end_iteration = end_iteration
        self.mask_gradients = mask_gradients
        self.enforcer: MaskEnforcer | None = None
        self.last_loss: torch.Tensor | None = None

    @property
    def iteration(self) -> int:
        """The absolute training iteration (number of optimizer steps taken since θ0)."""
        return self.start_iteration + self.global_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        """One optimizer step per ``(x, y)`` in the group ``batch``. Backward and step go through
        Lightning unless ``backward_hooks_are_no_ops`` (decided at the start of training); then
        ``loss.backward()`` and the torch optimizer's ``step()`` are called directly, between the two
        callbacks by which Lightning's manual optimization counts the step (``trainer.global_step``)."""
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        plain = self.__dict__.get("plain_backward", False)
        torch_optimizer = optimizer.optimizer
        before, after = optimizer._on_before_step, optimizer._on_after_step
        for x, y in batch:
            loss = F.cross_entropy(self.model(x), y)
            torch_optimizer.zero_grad(set_to_none=True)
            if plain:
                loss.backward()
                before()
                torch_optimizer.step()
                after()
            else:
                self.manual_backward(loss)
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
        self.__dict__["last_loss"] = loss.detach()  # plain attribute: skips nn.Module.__setattr__

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # BatchStream batches are already on the device: skip Lightning's collection walk.
        if all(t.device == device for pair in batch for t in pair):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_train_start(self) -> None:
        self.__dict__["plain_backward"] = backward_hooks_are_no_ops(self.trainer, self)

    def on_train_end(self) -> None:
        if self.enforcer is not None:
            self.enforcer.verify()  # pruned weights are still exactly 0 (one pass, once per round)

    def configure_optimizers(self):
        if self.mask is not None:
            self.enforcer = MaskEnforcer(self.model, self.mask, self.mask_gradients)
        masks = zip(self.enforcer.params, self.enforcer.masks) if self.enforcer is not None else ()
        optimizer = self.optimizer_settings.build(self.model.parameters(), masks, self.mask_gradients)
        skip_capture_check(optimizer)
        if self.enforcer is not None and not isinstance(optimizer, CompiledMaskedOptimizer):
            self.enforcer.attach(optimizer)  # the compiled optimizer applies the mask itself
        start, schedule = self.start_iteration, self.schedule
        if schedule.is_constant(start, self.end_iteration):
            # No scheduler to step 20K times for a constant learning rate (a measurable share of a
            # LeNet step); the rate is that of iteration ``start``, as LambdaLR would set it.
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * schedule.factor(start)
            return optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule.factor(start + step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}  # stepped by training_step

    def __setattr__(self, name: str, value) -> None:
        # Lightning sets ``_current_fx_name`` around every hook call (~40 times a step); it is a
        # plain string, so skip nn.Module.__setattr__'s parameter/module/buffer checks.
        if name == "_current_fx_name":
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)


def backward_hooks_are_no_ops(trainer: pl.Trainer, module: pl.LightningModule) -> bool:
    """Whether ``manual_backward(loss)`` would do nothing but ``loss.backward()``, and Lightning's
    ``optimizer.step()`` nothing but the torch optimizer's ``step()`` and the step count.

    Lightning's backward dispatches ``on_before_backward`` and ``on_after_backward`` to every
    callback and the module, and runs the strategy's and precision plugin's backward hooks:
    about 25-50 µs per optimizer step, 2.5-5% of a LeNet step on the CPU (BENCHMARKS.md). Its
    step goes through the strategy and the precision plugin, wraps a closure, and dispatches
    ``on_before_optimizer_step`` (gradient clipping does not apply to manual optimization). With
    one device, plain 32-bit precision, no profiler and none of those hooks overridden, all of
    that is a no-op, and ``LotteryModule`` calls ``loss.backward()`` and ``step()`` itself.
    Anything else (DDP, mixed precision, a callback with ``on_after_backward`` or
    ``on_before_optimizer_step``, ``trainer.profiler=...``) goes through Lightning.
    """
    hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
    return (
        type(trainer.strategy) is SingleDeviceStrategy
        and type(trainer.precision_plugin) is Precision
        and isinstance(trainer.profiler, NoProfiler)
        and type(module).backward is pl.LightningModule.backward
        and all(getattr(type(module), h) is getattr(pl.LightningModule, h) for h in hooks)
        and all(getattr(type(cb), h) is getattr(pl.Callback, h) for cb in trainer.callbacks for h in hooks)
    )


def skip_capture_check(optimizer: torch.optim.Optimizer) -> None:
    """Skip the CUDA-graph capture health check in ``step()`` when every parameter is on the CPU.

    Since torch 2.x every ``step()`` asks ``torch.accelerator.current_accelerator(check_available=True)``;
    Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, so on a machine without an initialised CUDA
    context that is a ``dlopen`` of libnvidia-ml per step. CPU tensors cannot be graph-captured,
    so the check has nothing to find there.
    """
    if all(p.device.type == "cpu" for g in optimizer.param_groups for p in g["params"]):
        optimizer._accelerator_graph_capture_health_check = lambda: None
