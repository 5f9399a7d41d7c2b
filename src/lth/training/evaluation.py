"""Periodic evaluation on the validation and test sets, and the early-stopping iteration.

Evaluation is a callback rather than Lightning's validation loop because the paper's
protocol evaluates *two* splits at fixed absolute iterations (multiples of ``eval_every``,
also in rounds rewound to iteration K), and because doing it in a few large batches under
``torch.inference_mode`` on tensors already on the device keeps it a small share of the run.
"""

from __future__ import annotations

import collections
import copy
import math
import time
from concurrent.futures import ThreadPoolExecutor

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

    ``background=True`` (``eval_beside_training``): a point evaluates a copy of the weights taken
    at its iteration, in a thread beside the training, on a copy of the network; training goes on
    at once. The points are the same, bit for bit (tested); they are taken into the curve in order
    at the next batch end, and all of them before a checkpoint and at the end. At most two wait at
    a time (training then waits for the oldest). A validation loss that diverges stops the round a
    few steps later than in the foreground; the points after it are dropped.

    The curve is kept in the callback's state so that a resumed checkpoint carries it.
    A non-finite training or validation loss, or a validation loss above ``divergence_factor`` times
    its value at the start (0: that check off), stops the round and marks it diverged.
    """

    def __init__(self, splits: dict, every: int, end_iteration: int, batch_size: int, on_point=None,
                 test_curve: bool = False, background: bool = False, divergence_factor: float = 0.0):
        self.divergence_factor = float(divergence_factor)
        self._start_val: float | None = None
        self.splits = splits
        self.every = every
        self.end_iteration = end_iteration
        self.batch_size = batch_size
        self.on_point = on_point
        self.test_curve = test_curve
        self.background = background
        self.curve: list[dict] = []
        self.diverged: str | None = None
        self.untested: dict | None = None  # the weights of the last point when its test split was skipped
        self._best = math.inf  # the lowest validation loss evaluated so far
        self._pending: collections.deque = collections.deque()
        self._executor: ThreadPoolExecutor | None = None
        self._copy: nn.Module | None = None
        self._trainer = None
        self._t0 = time.perf_counter()
        self.elapsed = 0.0

    def on_train_start(self, trainer, pl_module):
        self._t0 = time.perf_counter() - self.elapsed
        self._trainer = trainer
        self._best = self.best_val_loss()
        if not self.curve:  # not on a resume: the start point is in the restored curve
            self._evaluate(trainer, pl_module, pl_module.iteration, math.nan)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._trainer = trainer
        self._collect(wait=False)
        if self.diverged:
            return
        it = pl_module.iteration
        if it % self.every and it != self.end_iteration:
            return
        train_loss = float(pl_module.last_loss) if pl_module.last_loss is not None else math.nan
        if not math.isfinite(train_loss):
            self._collect(wait=True)
            if self.diverged:
                return
            self._test_last_point(pl_module.model)
            return self._diverge(f"training loss became {train_loss} at iteration {it}")
        self._evaluate(trainer, pl_module, it, train_loss)

    def on_train_end(self, trainer, pl_module):
        self._collect(wait=True)
        self._close()

    def on_exception(self, trainer, pl_module, exception):
        self._close()

    def best_val_loss(self) -> float:
        return min((p["val_loss"] for p in self.curve if math.isfinite(p["val_loss"])), default=math.inf)

    def _evaluate(self, trainer, pl_module, it: int, train_loss: float) -> None:
        point = {"iteration": it, "train_loss": train_loss, "lr": trainer.optimizers[0].param_groups[0]["lr"]}
        if not self.background:
            self._record(*self._measure(pl_module.model, point, None))
            return
        if self._copy is None:
            self._copy = copy.deepcopy(pl_module.model)
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="lth-evaluation")
        weights = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        if len(self._pending) >= 2:
            self._pending[0].result()  # training waits: at most two points in the queue
        self._pending.append(self._executor.submit(self._measure, self._copy, point, weights))
        self._collect(wait=False)

    def _measure(self, model: nn.Module, point: dict, weights: dict | None) -> tuple[dict, dict | None]:
        """``point`` with val (and, where needed, test) measured on ``model`` (loaded with ``weights``,
        if given), and the weights to keep for a later test (None where test was measured). In
        the evaluation thread, one point after the other: ``_best`` is its own while it runs."""
        if weights is not None:
            model.load_state_dict(weights)
        point["val_loss"], point["val_acc"] = evaluate(model, *self.splits["val"], self.batch_size)
        val = point["val_loss"]
        if self._start_val is None:  # the first point measured is the start (on a resume: the curve's first)
            self._start_val = self.curve[0]["val_loss"] if self.curve else val
        exploded = self.divergence_factor > 0 and val > self.divergence_factor * self._start_val  # the round stops here
        needed = (self.test_curve or point["iteration"] == self.end_iteration or not math.isfinite(val) or val < self._best
                  or exploded)
        if math.isfinite(val):
            self._best = min(self._best, val)
        if needed:
            point["test_loss"], point["test_acc"] = evaluate(model, *self.splits["test"], self.batch_size)
            return point, None
        point["test_loss"], point["test_acc"] = math.nan, math.nan
        return point, weights if weights is not None else {k: v.detach().clone() for k, v in model.state_dict().items()}

    def _record(self, point: dict, untested: dict | None) -> None:
        if self.diverged:  # measured beyond a divergence (in the background): not part of the round
            return
        point = {k: point[k] for k in ("iteration", "train_loss", "val_loss", "val_acc", "test_loss", "test_acc", "lr")}
        self.elapsed = time.perf_counter() - self._t0
        point["time_s"] = self.elapsed
        self.curve.append(point)
        self.untested = untested
        if self.on_point is not None:
            self.on_point(point)
        if not math.isfinite(point["val_loss"]):
            self._diverge(f"validation loss became {point['val_loss']} at iteration {point['iteration']}")
        elif self.divergence_factor > 0 and point["val_loss"] > self.divergence_factor * self.curve[0]["val_loss"]:
            self._diverge(f"validation loss {point['val_loss']:.3g} at iteration {point['iteration']} is above "
                          f"{self.divergence_factor:g}x its start ({self.curve[0]['val_loss']:.3g}; divergence_factor)")

    def _collect(self, wait: bool) -> None:
        """Take the points measured in the background into the curve, in order (``wait``: all of them)."""
        while self._pending and (wait or self._pending[0].done()):
            self._record(*self._pending.popleft().result())

    def _close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor, self._copy = None, None
            self._pending.clear()

    def _test_last_point(self, model: nn.Module) -> None:
        """The test split at the last point, from its kept weights (the round stops there)."""
        if self.untested is None or not self.curve:
            return
        current = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.untested)
        self.curve[-1]["test_loss"], self.curve[-1]["test_acc"] = evaluate(model, *self.splits["test"], self.batch_size)
        model.load_state_dict(current)
        self.untested = None

    def _diverge(self, reason: str):
        self.diverged = reason
        if self._trainer is not None:
            self._trainer.should_stop = True

    def state_dict(self):
        self._collect(wait=True)  # a checkpoint holds every point up to its iteration
        return {"curve": self.curve, "diverged": self.diverged, "elapsed": self.elapsed, "untested": self.untested}

    def load_state_dict(self, state_dict):
        self.curve = list(state_dict["curve"])
        self.diverged = state_dict["diverged"]
        self.elapsed = state_dict.get("elapsed", 0.0)
        self.untested = state_dict.get("untested")
        self._best = self.best_val_loss()


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
