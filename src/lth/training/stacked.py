"""Many networks of one shape trained as one stacked model: one forward, backward and update per step.

The networks of a level (the ticket, its controls, instability copies, pruning-at-init branches)
are independent and have one architecture. Their parameters are stacked along a new first
dimension (``[N, out, in]``) and the network is run once for all of them with
``torch.func.vmap`` over ``torch.func.functional_call``: the batched kernels do the work of N
small ones. Each network keeps what makes it itself:

- its **parameters and buffers** (row ``i`` of every stacked tensor) and its **mask** (multiplied
  into its row after every update, exactly as ``MaskEnforcer`` does alone);
- its **data order**: its own ``BatchStream`` batch of each iteration (a batch shared when the
  networks share a data seed);
- its **optimizer state**: Adam, AdamW and SGD are element-wise, so one optimizer over the stacked
  tensors is N optimizers (the loss is the sum of the networks' losses, whose gradient with
  respect to network ``i``'s parameters is its own loss's gradient);
- its **evaluation curve** and early-stopping choice (``lth.training.stacked_eval``).

On CUDA the whole step (data gather excepted) is captured once in a CUDA graph and replayed
(``lth.training.stacked_graph``): one launch per step instead of a hundred.
"""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from lth.pruning import Mask
from lth.training.module import OptimizerSettings, skip_capture_check
from lth.training.schedule import LRSchedule
from lth.training.stacked_graph import MIN_CONSTANT, make_steps
from lth.training.stacked_steps import StackedSteps


def stack_signature(model: nn.Module) -> tuple:
    """Networks with the same signature can be stacked: the same parameter and buffer names,
    shapes and dtypes, and the same module structure."""
    tensors = [(n, tuple(t.shape), t.dtype) for n, t in [*model.named_parameters(), *model.named_buffers()]]
    return type(model).__qualname__, tuple(tensors), repr(model)


def unstackable(model: nn.Module) -> str | None:
    """Why ``model`` cannot train stacked with the same results as alone, or None.

    Dropout draws its noise from the global generator: stacked, each network would see other
    (equally random) draws than alone, so a network with dropout trains one at a time."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"it has dropout ({name or 'model'}: p={module.p}), whose draws depend on the training order"
    return None


class StackedNetworks(nn.Module):
    """N networks of one architecture as stacked tensors, run together with ``vmap``."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        first = models[0]
        self.n = len(models)
        self.param_names = [n for n, _ in first.named_parameters()]
        self.buffer_names = [n for n, _ in first.named_buffers()]
        self.state_keys = list(first.state_dict().keys())  # what final.pt holds
        per = [dict(m.named_parameters()) for m in models]
        self.stacked = nn.ParameterList(
            [nn.Parameter(torch.stack([p[n].detach() for p in per]).clone()) for n in self.param_names])
        bufs = [dict(m.named_buffers()) for m in models]
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"buffer_{i}", torch.stack([b[n].detach() for b in bufs]).clone())
        # The architecture without storage: functional_call substitutes the stacked rows.
        self.__dict__["template"] = copy.deepcopy(first).to("meta")

    def params(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.param_names, self.stacked))

    def buffers_by_name(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, f"buffer_{i}") for i, n in enumerate(self.buffer_names)}

    def train(self, mode: bool = True):
        self.template.train(mode)
        return super().train(mode)

    def _call(self, params, buffers, x):
        return functional_call(self.template, (params, buffers), (x,))

    def logits(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        """``[N, batch, classes]``: every network on ``x`` (one batch for all when ``shared``, else ``[N, batch, ...]``).
        A stack of one runs its row directly (views of the stacked tensors): the single network's kernels."""
        if self.n == 1:
            rows = ({k: v[0] for k, v in self.params().items()}, {k: v[0] for k, v in self.buffers_by_name().items()})
            return self._call(*rows, x if shared else x[0]).unsqueeze(0)
        return vmap(self._call, in_dims=(0, 0, None if shared else 0))(self.params(), self.buffers_by_name(), x)

    def losses(self, x: torch.Tensor, y: torch.Tensor, shared: bool) -> torch.Tensor:
        """``[N]``: each network's mean cross-entropy on its batch."""
        logits = self.logits(x, shared)
        if self.n == 1:
            return F.cross_entropy(logits[0], y if shared else y[0]).unsqueeze(0)
        return vmap(F.cross_entropy, in_dims=(0, None if shared else 0))(logits, y)

    def state_of(self, i: int) -> dict[str, torch.Tensor]:
        """Network ``i``'s ``state_dict`` (CPU copies), as its model alone would give it."""
        rows = {**self.params(), **self.buffers_by_name()}
        return {k: rows[k][i].detach().cpu().clone() for k in self.state_keys}


class StackedModule(pl.LightningModule):
    """Trains N stacked networks from their current weights, each with its mask kept at zero.

    Iterations are absolute, as in ``LotteryModule`` (every network of a stack starts at the same
    ``start_iteration``). Each Lightning batch is a group of consecutive ``(x, y)`` batches; each is
    one optimizer step through Lightning's manual optimization (``trainer.global_step`` counts
    steps). The learning rate of each step is the schedule's at its iteration, as ``LambdaLR`` sets it.
    ``cuda_graph``: on a CUDA device, replay the step from a CUDA graph (``stacked_graph``).
    """

    def __init__(self, models: list[nn.Module], masks: list[Mask], optimizer: OptimizerSettings,
                 schedule: LRSchedule, start_iteration: int, end_iteration: int, shared_data: bool,
                 mask_gradients: bool = False, cuda_graph: bool = True):
        super().__init__()
        self.automatic_optimization = False
        self.net = StackedNetworks(models)
        self.masks = masks
        self.optimizer_settings = dataclass_replace_compile(optimizer)
        self.schedule = schedule
        self.start_iteration = start_iteration
        self.end_iteration = end_iteration
        self.shared_data = shared_data
        self.mask_gradients = mask_gradients
        self.cuda_graph = cuda_graph
        names = self.net.param_names
        for i, name in enumerate(names):
            if any(name in m and not bool(m[name].all()) for m in masks):
                keep = torch.stack([m[name] if name in m else torch.ones(self.net.stacked[i].shape[1:], dtype=torch.bool)
                                    for m in masks])
                self.register_buffer(f"mask_{i}", keep.to(self.net.stacked[i].dtype))
        self.steps: StackedSteps | None = None
        self.last_losses: torch.Tensor | None = None

    @property
    def iteration(self) -> int:
        return self.start_iteration + self.global_step

    def lr_factor(self, iteration: int) -> float:
        if self.schedule.is_constant(self.start_iteration, self.end_iteration):
            return self.schedule.factor(self.start_iteration)
        return self.schedule.factor(iteration)

    def rate_stays(self, iteration: int) -> bool:
        """Whether the learning rate is the same for the next ``MIN_CONSTANT`` steps (CUDA graph)."""
        return self.schedule.is_constant(self.start_iteration, self.end_iteration) or self.schedule.is_constant(
            iteration, min(iteration + MIN_CONSTANT, self.end_iteration))

    def configure_optimizers(self):
        optimizer = self.optimizer_settings.build(self.net.parameters())
        skip_capture_check(optimizer)
        masks = {i: getattr(self, f"mask_{i}") for i in range(len(self.net.param_names)) if hasattr(self, f"mask_{i}")}
        self.steps = make_steps(self.net, optimizer, masks, self.mask_gradients, self.cuda_graph, self.rate_stays)
        optimizer.step = self._lightning_step  # Lightning's optimizer_step lands in the whole training step
        return optimizer

    def _lightning_step(self, closure=None, **_):
        if closure is not None:
            closure()  # Lightning's on_before_optimizer_step hooks (a no-op closure in manual optimization)
        x, y, it = self.__dict__["pending"]
        self.__dict__["last_losses"] = self.steps.run(x, y, self.shared_data, it)

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        it = self.iteration
        base = self.optimizer_settings.lr
        for x, y in batch:
            lr = base * self.lr_factor(it)
            for group in optimizer.param_groups:
                if group["lr"] != lr:
                    group["lr"] = lr
            self.__dict__["pending"] = (x, y, it)
            optimizer.step()
            it += 1
        self.__dict__.pop("pending", None)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        if all(t.device == device for pair in batch for t in pair):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_train_end(self) -> None:
        if self.steps is not None:
            self.steps.verify()

    def __setattr__(self, name: str, value) -> None:
        if name == "_current_fx_name":  # as LotteryModule: skip nn.Module's checks ~40 times a step
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)


def dataclass_replace_compile(settings: OptimizerSettings) -> OptimizerSettings:
    """The stack's update is torch's fused (or graph-captured) optimizer: ``optimizer.compile`` is a
    speed setting of the single-network path and changes no result, so it is dropped here."""
    import dataclasses

    return dataclasses.replace(settings, compile=False)
