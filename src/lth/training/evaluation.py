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
    """Evaluates val at the start (iteration 0, or K when rewound), at absolute iterations
    ``every, 2*every, ...`` and at the last one. The start point takes part in the early-stopping
    choice, as in the reference implementation: a network that never improves stops at its start.

    The test split is evaluated only where the paper's measurements read it (``test_curve=False``,
    the default): at a new minimum of the validation loss (the early-stopping candidates; the
    earliest wins ties, so an equal loss is not a new minimum), at the last iteration (the final
    accuracy) and where validation diverges. Elsewhere the point's ``test_loss``/``test_acc`` are
    NaN. Every value ``summarize`` returns is the same as with the test split evaluated everywhere
    (``test_curve=True``, tested). Should the *training* loss diverge, the round stops before the
    next evaluation and the previous point becomes the last one: its weights were kept (a copy,
    in the callback's state so that a resume keeps it) so that its test accuracy is measured then.

    The curve is kept in the callback's state so that a resumed checkpoint carries it.
    A non-finite training or validation loss stops the round and marks it diverged.
    """

    def __init__(self, splits: dict, every: int, end_iteration: int, batch_size: int, on_point=None,
                 test_curve: bool = False):
        self.splits = splits
        self.every = every
        self.end_iteration = end_iteration
        self.batch_size = batch_size
        self.on_point = on_point
        self.test_curve = test_curve
        self.curve: list[dict] = []
        self.diverged: str | None = None
        self.untested: dict | None = None  # the weights of the last point when its test split was skipped
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
            self._test_last_point(pl_module.model)
            return self._diverge(trainer, f"training loss became {train_loss} at iteration {it}")
        self._evaluate(trainer, pl_module, it, train_loss)

    def best_val_loss(self) -> float:
        return min((p["val_loss"] for p in self.curve if math.isfinite(p["val_loss"])), default=math.inf)

    def _evaluate(self, trainer, pl_module, it: int, train_loss: float) -> None:
        point = {"iteration": it, "train_loss": train_loss}
        model = pl_module.model
        point["val_loss"], point["val_acc"] = evaluate(model, *self.splits["val"], self.batch_size)
        val = point["val_loss"]
        needed = self.test_curve or it == self.end_iteration or not math.isfinite(val) or val < self.best_val_loss()
        point["test_loss"], point["test_acc"] = evaluate(model, *self.splits["test"], self.batch_size) if needed \
            else (math.nan, math.nan)
        self.untested = None if needed else {k: v.detach().clone() for k, v in model.state_dict().items()}
        point["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        self.elapsed = time.perf_counter() - self._t0
        point["time_s"] = self.elapsed
        self.curve.append(point)
        if self.on_point is not None:
            self.on_point(point)
        if not math.isfinite(point["val_loss"]):
            self._diverge(trainer, f"validation loss became {point['val_loss']} at iteration {it}")

    def _test_last_point(self, model: nn.Module) -> None:
        """The test split at the last point, from its kept weights (the round stops there)."""
        if self.untested is None or not self.curve:
            return
        current = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.untested)
        self.curve[-1]["test_loss"], self.curve[-1]["test_acc"] = evaluate(model, *self.splits["test"], self.batch_size)
        model.load_state_dict(current)
        self.untested = None

    def _diverge(self, trainer, reason: str):
        self.diverged = reason
        trainer.should_stop = True

    def state_dict(self):
        return {"curve": self.curve, "diverged": self.diverged, "elapsed": self.elapsed, "untested": self.untested}

    def load_state_dict(self, state_dict):
        self.curve = list(state_dict["curve"])
        self.diverged = state_dict["diverged"]
        self.elapsed = state_dict.get("elapsed", 0.0)
        self.untested = state_dict.get("untested")


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
