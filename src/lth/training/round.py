"""Train one network for one level: a fresh Lightning ``Trainer`` and optimizer, resumable.

A training is idempotent: its ``row.json`` (written last) marks it complete and it is then skipped;
an interrupted one continues from its last Lightning checkpoint and ends identical to an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar
from torch import nn

from lth.distributed import barrier
from lth.results import read_row
from lth.pruning import Mask
from lth.storage import atomic_torch_save, atomic_write_csv, atomic_write_json
from lth.training.checkpointing import AtomicCheckpointIO, CaptureState, usable_checkpoint
from lth.training.evaluation import DivergedError, PeriodicEvaluation, summarize
from lth.training.interrupt import SaveOnSignal, stop_cleanly
from lth.training.lean_trainer import NoProfiler, RoundCheckpoint
from lth.training.module import LotteryModule, OptimizerSettings
from lth.training.schedule import LRSchedule

log = logging.getLogger("lth")


@dataclass
class Training:
    """What to train: a network of ``level`` for ``branch``, written to ``folder``."""

    level: int
    branch: str
    folder: Path
    mask: Mask
    model: nn.Module  # initialised to the start state; the mask is applied here
    start_iteration: int
    data_seed: int
    keep_final: bool = False  # save final.pt (weights that later levels or analyses read)
    capture_at: int | None = None  # save the state at this iteration (θK) to ``capture_path``
    capture_path: Path | None = None


def optimizer_settings(cfg: DictConfig) -> OptimizerSettings:
    o = cfg.optimizer
    return OptimizerSettings(
        name=str(o.name), lr=float(o.lr),  # the peak of the warm-up when lr_warmup=true
        momentum=float(o.get("momentum", 0.0)), weight_decay=float(o.get("weight_decay", 0.0)),
        nesterov=bool(o.get("nesterov", False)), compile=bool(o.get("compile", False)),
    )


def lr_schedule(cfg: DictConfig) -> LRSchedule:
    warm = int(cfg.warmup.iterations) if cfg.lr_warmup else 0
    return LRSchedule(warm, tuple(int(m) for m in cfg.schedule.milestones), float(cfg.schedule.gamma))


def eval_beside_training(cfg: DictConfig, device: torch.device, alone: bool = True) -> bool:
    """``eval_beside_training``: true, false, or auto (the default): on the CPU where the evaluation
    thread finds a free core, i.e. the training runs ``alone`` (not in a worker of
    ``parallel_branches``) on more cores than ``trainer.torch_threads``; not on a GPU, where it
    would queue on the same stream. (On a CPU with no free core it only competes with training.)
    Never with a streamed dataset's loader processes (``data.num_workers`` > 0): litdata forks them at every
    epoch, and a fork while the evaluation thread runs deadlocked the training."""
    if (cfg.get("data") or {}).get("num_workers"):
        return False
    value = cfg.get("eval_beside_training", "auto")
    if value not in (None, "auto"):
        return bool(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return device.type == "cpu" and alone and cores > int(cfg.trainer.get("torch_threads", 1))


def steps_per_call(limit: int, *iterations: int) -> int:
    """The largest group size <= ``limit`` that divides every iteration given (round start and end,
    evaluation and checkpoint periods, θK), so that every group boundary Lightning's callbacks see
    includes each of those iterations."""
    g = math.gcd(*iterations)
    return next(k for k in range(min(limit, g) or 1, 0, -1) if g % k == 0)


class RoundTrainer:
    def __init__(self, cfg: DictConfig, datamodule, tracker=None, callbacks: list | None = None):
        self.cfg = cfg
        self.dm = datamodule
        self.tracker = tracker
        self.callbacks = callbacks if callbacks is not None else []  # added to every Trainer (tests, tools)
        self.progress_bar = None  # callable(training) -> a Lightning progress bar, set by the lottery
        self.alone = True  # False in a worker of parallel_branches (others train beside it)

    def finished(self, folder: Path, keep_final: bool) -> dict | None:
        """The row of a completed training, or None (a row whose final weights are unreadable is undone)."""
        done = Path(folder) / "row.json"
        if not done.exists():
            return None
        row = read_row(done)
        if keep_final and not row["diverged"] and not (Path(folder) / "final.pt").exists():
            log.warning("%s: final weights missing; retraining it", folder)
            done.unlink()
            return None
        for stale in (Path(folder) / "checkpoints").glob("*.ckpt"):  # a kill between row.json and clean-up
            stale.unlink()
        return row

    def make_trainer(self, folder: Path, steps: int, callbacks: list, t: Training | None = None) -> pl.Trainer:
        tc = self.cfg.trainer
        progress = bool(tc.get("enable_progress_bar", True))
        if progress and not any(isinstance(c, ProgressBar) for c in callbacks):
            # Redrawing every step is a measurable share of a small network's step (BENCHMARKS.md).
            bar = self.progress_bar(t) if self.progress_bar and t else TQDMProgressBar(refresh_rate=25)
            callbacks = [*callbacks, bar]
        return pl.Trainer(
            accelerator=str(tc.accelerator), devices=tc.devices, strategy=tc.get("strategy", "auto"),
            precision=tc.get("precision", "32-true"), deterministic=bool(tc.get("deterministic", False)),
            max_steps=steps, max_epochs=-1,
            logger=self.tracker.logger if self.tracker and self.tracker.active else False,
            callbacks=callbacks, plugins=[AtomicCheckpointIO()], enable_checkpointing=True,
            enable_model_summary=False, enable_progress_bar=progress, num_sanity_val_steps=0,
            limit_val_batches=0, log_every_n_steps=int(self.cfg.eval_every), default_root_dir=str(folder),
            profiler=tc.get("profiler") or NoProfiler(),
        )

    def train(self, t: Training) -> dict:
        """Train (or resume, or skip) ``t``; returns its result row."""
        row = self.finished(t.folder, t.keep_final)
        if row is not None:
            log.info("round %d %s: already complete (%.2f%% remaining), skipped", t.level, t.branch,
                     row["weights_remaining"])
            return row
        cfg, end = self.cfg, int(self.cfg.train.iterations)
        t.mask.apply_(t.model)
        # torch's global generator (dropout) drawn from the training itself, not from what the process
        # ran before: the same bits in a worker process (parallel_branches) as in a sequential run
        torch.manual_seed(int.from_bytes(hashlib.sha256(f"{t.data_seed}/{t.level}/{t.branch}".encode()).digest()[:4], "little"))
        module = LotteryModule(t.model, t.mask, optimizer_settings(cfg), lr_schedule(cfg), t.start_iteration, end,
                               mask_gradients=bool(cfg.get("mask_gradients", False)))
        on_point = (lambda p: self.tracker.curve_point(t.level, t.branch, p)) if self.tracker else None
        evaluation = PeriodicEvaluation({s: self.dm.splits[s] for s in ("val", "test")}, int(cfg.eval_every), end,
                                        int(cfg.eval_batch_size), on_point=on_point,
                                        test_curve=bool(cfg.get("test_curve", False)),
                                        background=eval_beside_training(cfg, self.dm.splits["val"][0].device, self.alone),
                                        divergence_factor=float(cfg.get("divergence_factor", 0)))
        ckpt_dir = t.folder / "checkpoints"
        where = f"during round {t.level} {t.branch}"
        saver = SaveOnSignal(ckpt_dir / "last.ckpt", where)
        callbacks = [evaluation, saver,
                     RoundCheckpoint(dirpath=str(ckpt_dir), filename="last", every_n_train_steps=int(cfg.checkpoint_every),
                                     save_top_k=-1, save_last=False, enable_version_counter=False)]
        if t.capture_at is not None:
            callbacks.append(CaptureState(t.capture_at, t.capture_path))
        trainer = self.make_trainer(t.folder, end - t.start_iteration, callbacks + self.callbacks, t)
        group = steps_per_call(int(cfg.trainer.get("steps_per_call", 1)), t.start_iteration, end, int(cfg.eval_every),
                               int(cfg.checkpoint_every), t.capture_at or 0)
        stream = self.dm.train_stream(int(cfg.train.batch_size), t.data_seed, end, position=lambda: module.iteration,
                                      length=end - t.start_iteration, group=group)
        resume = usable_checkpoint(ckpt_dir / "last.ckpt")
        remaining = t.mask.weights_remaining()
        # The progress bar (a terminal) or the line at the end (piped) says which training runs; a resume is news.
        log.log(logging.INFO if resume else logging.DEBUG, "level %d/%d %s: %.2f%% of weights remaining, iterations "
                "%d..%d%s", t.level, int(cfg.prune.rounds), t.branch, remaining, t.start_iteration, end,
                f" (resuming from {resume.name})" if resume else "")
        t0 = time.perf_counter()
        with stop_cleanly(where, saver):
            trainer.fit(module, train_dataloaders=stream, ckpt_path=str(resume) if resume else None, weights_only=True)
        wall = time.perf_counter() - t0
        row = {"round": t.level, "branch": t.branch, "weights_remaining": remaining}
        diverged = evaluation.diverged
        try:
            row.update(summarize(evaluation.curve))
        except DivergedError as exc:
            diverged = diverged or str(exc)
        row.update({"train_time_s": round(evaluation.elapsed or wall, 3), "diverged": bool(diverged),
                    "diverged_reason": diverged or ""})
        row.update({f"remaining:{n}": round(v, 4) for n, v in t.mask.layer_remaining().items()})
        atomic_write_csv(t.folder / "curve.csv", evaluation.curve)
        if t.keep_final and not diverged:
            atomic_torch_save({k: v.detach().cpu().clone() for k, v in module.model.state_dict().items()},
                              t.folder / "final.pt")
        atomic_write_json(t.folder / "row.json", row)  # the completion marker, written last
        for ckpt in ckpt_dir.glob("*.ckpt"):
            ckpt.unlink(missing_ok=True)
        barrier()  # DDP: every rank reads what rank 0 wrote (final.pt, row.json) from here on
        if self.tracker:
            self.tracker.level(row, evaluation.curve)
        where = f"level {t.level}/{int(cfg.prune.rounds)} {t.branch} ({remaining:.3g}% of weights)"
        if diverged:  # one line per finished training, also for a diverged one
            log.error("%s diverged: %s, stopped and recorded as diverged; lower optimizer.lr or set lr_warmup=true "
                      "(%.1fs)", where, diverged, wall)
        else:
            log.info("%s: early stop at iteration %s, test accuracy %.2f%% (final %.2f%%), %.1fs", where,
                     row.get("es_iteration"), 100 * row.get("test_acc_at_es", float("nan")),
                     100 * row.get("final_test_acc", float("nan")), wall)
        return row


    def replay(self, t: Training, until: int) -> None:
        """Train ``t`` from its start to iteration ``until`` only, to capture the state there (θK of a
        dense round trained before K was asked for). Same batches, learning rates and optimizer as
        the full training, so the same θK as a capture during it."""
        cfg = self.cfg
        t.mask.apply_(t.model)
        module = LotteryModule(t.model, t.mask, optimizer_settings(cfg), lr_schedule(cfg), t.start_iteration, until,
                               mask_gradients=bool(cfg.get("mask_gradients", False)))
        trainer = pl.Trainer(
            accelerator=str(cfg.trainer.accelerator), devices=cfg.trainer.devices,
            strategy=cfg.trainer.get("strategy", "auto"), precision=cfg.trainer.get("precision", "32-true"),
            max_steps=until - t.start_iteration, max_epochs=-1, logger=False, enable_checkpointing=False,
            enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0,
            callbacks=[CaptureState(until, t.capture_path), *self.callbacks], default_root_dir=str(t.folder),
            profiler=NoProfiler(),
        )
        group = steps_per_call(int(cfg.trainer.get("steps_per_call", 1)), t.start_iteration, until)
        stream = self.dm.train_stream(int(cfg.train.batch_size), t.data_seed, until, position=lambda: module.iteration,
                                      length=until - t.start_iteration, group=group)
        log.info("replaying the dense round's first %d iterations for θ%d", until, until)
        with stop_cleanly(f"replaying the dense round to iteration {until}"):
            trainer.fit(module, train_dataloaders=stream)
        barrier()

