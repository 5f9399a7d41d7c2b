"""Periodic evaluation on the validation and test sets, and the early-stopping iteration.

Evaluation is a callback rather than Lightning's validation loop because the paper's
protocol evaluates *two* splits at fixed absolute iterations (multiples of ``eval_every``,
also in rounds rewound to iteration K), and because doing it in a few large batches under
``torch.inference_mode`` on tensors already on the device keeps it a small share of the run.
"""

from __future__ import annotations

import math
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn


class DivergedError(RuntimeError):
    pass


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) of ``model`` on ``(x, y)``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for i in range(0, len(y), batch_size):
        logits = model(x[i : i + batch_size])
        target = y[i : i + batch_size]
        loss_sum += F.cross_entropy(logits.float(), target, reduction="sum").double()
        correct += (logits.argmax(1) == target).sum()
    model.train(was_training)
    return float(loss_sum) / len(y), float(correct) / len(y)


def early_stopping_index(val_losses: list[float]) -> int:
    """Index of the minimum validation loss (the earliest on ties; non-finite values never win)."""
    best, best_i = math.inf, -1
    for i, v in enumerate(val_losses):
        if math.isfinite(v) and v < best:
            best, best_i = v, i
    if best_i < 0:
        raise DivergedError("no finite validation loss was recorded")
    return best_i


class PeriodicEvaluation(pl.Callback):
    """Evaluates val and test at the start (iteration 0, or K when rewound), at absolute iterations
    ``every, 2*every, ...`` and at the last one. The start point takes part in the early-stopping
    choice, as in the reference implementation: a network that never improves stops at its start.

    The curve is kept in the callback's state so that a resumed checkpoint carries it.
    A non-finite training or validation loss, or a validation loss above ``divergence_factor`` times
    its value at the start (0: that check off), stops the round and marks it diverged.
    """

    def __init__(self, splits: dict, every: int, end_iteration: int, batch_size: int, on_point=None,
                 divergence_factor: float = 0.0):
        self.divergence_factor = float(divergence_factor)
        self.splits = splits
        self.every = every
        self.end_iteration = end_iteration
        self.batch_size = batch_size
        self.on_point = on_point
        self.curve: list[dict] = []
        self.diverged: str | None = None
        self._t0 = time.perf_counter()
        self.elapsed = 0.0

    def on_train_start(self, trainer, pl_module):
        self._t0 = time.perf_counter() - self.elapsed
        if not self.curve:  # not on a resume: the start point is in the restored curve
            self._evaluate(trainer, pl_module, pl_module.iteration, math.nan)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        it = pl_module.iteration
        if it % self.every and it != self.end_iteration:
            return
        train_loss = float(pl_module.last_loss) if pl_module.last_loss is not None else math.nan
        if not math.isfinite(train_loss):
            return self._diverge(trainer, f"training loss became {train_loss} at iteration {it}")
        self._evaluate(trainer, pl_module, it, train_loss)

    def _evaluate(self, trainer, pl_module, it: int, train_loss: float) -> None:
        point = {"iteration": it, "train_loss": train_loss}
        for split in ("val", "test"):
            loss, acc = evaluate(pl_module.model, *self.splits[split], self.batch_size)
            point[f"{split}_loss"], point[f"{split}_acc"] = loss, acc
        point["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        self.elapsed = time.perf_counter() - self._t0
        point["time_s"] = self.elapsed
        self.curve.append(point)
        if self.on_point is not None:
            self.on_point(point)
        if not math.isfinite(point["val_loss"]):
            self._diverge(trainer, f"validation loss became {point['val_loss']} at iteration {it}")
        elif self.divergence_factor > 0 and point["val_loss"] > self.divergence_factor * self.curve[0]["val_loss"]:
            self._diverge(trainer, f"validation loss {point['val_loss']:.3g} at iteration {it} is above "
                                   f"{self.divergence_factor:g}x its start ({self.curve[0]['val_loss']:.3g}; divergence_factor)")

    def _diverge(self, trainer, reason: str):
        self.diverged = reason
        trainer.should_stop = True

    def state_dict(self):
        return {"curve": self.curve, "diverged": self.diverged, "elapsed": self.elapsed}

    def load_state_dict(self, state_dict):
        self.curve = list(state_dict["curve"])
        self.diverged = state_dict["diverged"]
        self.elapsed = state_dict.get("elapsed", 0.0)


def summarize(curve: list[dict]) -> dict:
    """The paper's per-network measurements from an evaluation curve."""
    if not curve:
        raise DivergedError("no evaluation was recorded")
    i = early_stopping_index([p["val_loss"] for p in curve])
    last = curve[-1]
    return {
        "es_iteration": curve[i]["iteration"],
        "test_acc_at_es": curve[i]["test_acc"],
        "val_acc_at_es": curve[i]["val_acc"],
        "min_val_loss": curve[i]["val_loss"],
        "final_test_acc": last["test_acc"],
        "final_val_loss": last["val_loss"],
        "final_iteration": last["iteration"],
    }
