"""Evaluation of a stack of networks in one pass, and each network's own curve and early stop.

Every network is evaluated on the same validation and test examples at the same iterations as
alone (``lth.training.evaluation``): one vmapped forward per evaluation batch gives the logits of
all of them. Each network gets its own curve; its early-stopping iteration is chosen from its own
validation losses by ``summarize``, as alone. A network whose training or validation loss stops
being finite is marked diverged with the message it would get alone, and its curve ends there (as
its training would); the others train on.
"""

from __future__ import annotations

import math
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F


@torch.inference_mode()
def evaluate_stack(net, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[list[float], list[float]]:
    """(mean cross-entropy loss, accuracy) of each stacked network on ``(x, y)``, as ``evaluate``
    computes them (cross-entropy on float32 logits, summed in float64)."""
    was_training = net.training
    net.eval()
    loss_sum = torch.zeros(net.n, device=x.device, dtype=torch.float64)
    correct = torch.zeros(net.n, device=x.device, dtype=torch.int64)
    for i in range(0, len(y), batch_size):
        logits = net.logits(x[i : i + batch_size], shared=True)  # [N, b, classes]
        target = y[i : i + batch_size]
        per = F.cross_entropy(logits.float().flatten(0, 1), target.repeat(net.n), reduction="none")
        loss_sum += per.view(net.n, -1).sum(1).double()
        correct += (logits.argmax(2) == target).sum(1)
    net.train(was_training)
    return (loss_sum / len(y)).tolist(), (correct.double() / len(y)).tolist()


class StackedEvaluation(pl.Callback):
    """``PeriodicEvaluation`` for a stack: evaluates val at the start, at absolute iterations
    ``every, 2*every, ...`` and at the last one; one curve per network. The test split, as alone: at
    every point with ``test_curve``, else only where some network needs it (a new minimum of its
    validation loss, the last iteration, a divergence); a network that does not need it gets NaN
    there, as alone, so that its curve is the one it would have alone.

    ``on_point(i, point)`` is called for each point of network ``i``. The curves and the divergence
    of each network are in the callback's state, so a resumed checkpoint carries them."""

    def __init__(self, splits: dict, every: int, end_iteration: int, batch_size: int, n: int, on_point=None,
                 divergence_factor: float = 0.0, test_curve: bool = False):
        self.divergence_factor = float(divergence_factor)  # as PeriodicEvaluation's
        self.test_curve = test_curve
        self.splits = splits
        self.every = every
        self.end_iteration = end_iteration
        self.batch_size = batch_size
        self.on_point = on_point
        self.curves: list[list[dict]] = [[] for _ in range(n)]
        self.diverged: list[str | None] = [None] * n
        self._t0 = time.perf_counter()
        self.elapsed = 0.0

    def on_train_start(self, trainer, pl_module):
        self._t0 = time.perf_counter() - self.elapsed
        if not any(self.curves):
            self._evaluate(trainer, pl_module, pl_module.iteration, [math.nan] * len(self.curves))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        it = pl_module.iteration
        if it % self.every and it != self.end_iteration:
            return
        losses = pl_module.last_losses.tolist() if pl_module.last_losses is not None else [math.nan] * len(self.curves)
        for i, loss in enumerate(losses):
            if self.diverged[i] is None and not math.isfinite(loss):
                self.diverged[i] = f"training loss became {loss} at iteration {it}"
        self._evaluate(trainer, pl_module, it, losses)

    def _evaluate(self, trainer, pl_module, it: int, train_losses: list[float]) -> None:
        live = [i for i, d in enumerate(self.diverged) if d is None]
        if not live:
            trainer.should_stop = True
            return
        val = evaluate_stack(pl_module.net, *self.splits["val"], self.batch_size)
        needs = {i for i in live if self._needs_test(i, it, val[0][i])}
        test = evaluate_stack(pl_module.net, *self.splits["test"], self.batch_size) if needs else None
        lr = pl_module.optimizer_settings.lr * pl_module.lr_factor(it)
        self.elapsed = time.perf_counter() - self._t0
        for i in live:
            point = {"iteration": it, "train_loss": train_losses[i], "val_loss": val[0][i], "val_acc": val[1][i]}
            point["test_loss"], point["test_acc"] = (test[0][i], test[1][i]) if i in needs else (math.nan, math.nan)
            point["lr"] = lr
            point["time_s"] = self.elapsed
            self.curves[i].append(point)
            if self.on_point is not None:
                self.on_point(i, point)
            start = self.curves[i][0]["val_loss"]
            if not math.isfinite(point["val_loss"]):
                self.diverged[i] = f"validation loss became {point['val_loss']} at iteration {it}"
            elif self.divergence_factor > 0 and point["val_loss"] > self.divergence_factor * start:
                self.diverged[i] = (f"validation loss {point['val_loss']:.3g} at iteration {it} is above "
                                    f"{self.divergence_factor:g}x its start ({start:.3g}; divergence_factor)")
        if all(d is not None for d in self.diverged):
            trainer.should_stop = True

    def _needs_test(self, i: int, it: int, val: float) -> bool:
        """Whether network ``i`` reads the test split at this point (``PeriodicEvaluation._measure``'s rule)."""
        curve = self.curves[i]
        best = min((p["val_loss"] for p in curve if math.isfinite(p["val_loss"])), default=math.inf)
        start = curve[0]["val_loss"] if curve else val
        exploded = self.divergence_factor > 0 and val > self.divergence_factor * start
        return self.test_curve or it == self.end_iteration or not math.isfinite(val) or val < best or exploded

    @property
    def curve(self) -> list[dict]:
        """The first network's curve (what a progress bar shows: ``lth.progress.latest_evaluation``)."""
        return self.curves[0]

    def state_dict(self):
        return {"curves": self.curves, "diverged": self.diverged, "elapsed": self.elapsed}

    def load_state_dict(self, state_dict):
        self.curves = [list(c) for c in state_dict["curves"]]
        self.diverged = list(state_dict["diverged"])
        self.elapsed = state_dict.get("elapsed", 0.0)
