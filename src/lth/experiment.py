"""The lottery-ticket experiment: the prune-rewind rounds around Lightning's Trainer.

Round 0 trains the dense network from θ0. Each later round prunes the previous round's
trained weights by magnitude, resets the survivors to θ0 (or θK when rewinding) and trains
again, with a fresh Trainer and optimizer. Controls (``reinit``, ``random_prune``) train at
every level on the same budget.

Every stage is idempotent: it looks on disk first and skips what is complete (a round's
``row.json`` is its completion marker and is written last), so re-running the same command
continues an interrupted experiment. Folder layout::

    <experiment>/
      experiment.json          identity (config hash) and progress
      theta0.pt  [theta_k.pt]  initial (and rewind) state: every parameter and buffer
      round_00/mask.pt         the mask of this level (name -> bool)
      round_00/ticket/         curve.csv, final.pt, row.json, checkpoints/ while running
      round_01/...             also reinit/, random_prune/, continued/ when selected
      results.csv results.json lottery_ticket.png learning_curves.png
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import hydra.utils
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar
from torch import nn

from lth.checkpointing import AtomicCheckpointIO, CaptureState, usable_checkpoint
from lth.distributed import local_device_index, sync_mask
from lth.evaluation import DivergedError, PeriodicEvaluation, summarize
from lth.figures import plot_learning_curves, plot_sparsity_figure
from lth.lean_trainer import NoProfiler, RoundCheckpoint
from lth.models import build_model
from lth.module import LotteryModule, OptimizerSettings
from lth.naming import config_hash
from lth.pruning import Mask, prunable_tensors, prune_global, prune_layerwise, random_mask_like
from lth.pruning.prunable import is_exempt
from lth.results import format_table, write_results
from lth.schedule import LRSchedule
from lth.storage import atomic_torch_save, atomic_write_csv, atomic_write_json, load_tensors, read_json
from lth.tracking import Tracker

log = logging.getLogger("lth")

CONTROLS = ("reinit", "random_prune")
# Seeds of the controls' random draws are offset from the experiment seed.
REINIT_SEED_OFFSET = 100_003
RANDOM_MASK_SEED_OFFSET = 200_003


class ExperimentError(RuntimeError):
    """A problem the user can fix (wrong folder, bad setting); reported without a traceback."""


@dataclass
class Trained:
    row: dict
    state: dict[str, torch.Tensor] | None  # final weights (kept for branches that drive pruning)


def resolve_device(trainer_cfg: DictConfig) -> torch.device:
    accel = str(trainer_cfg.get("accelerator", "auto"))
    if accel in ("gpu", "cuda") or (accel == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_device_index())  # DDP: this rank's GPU
    if accel == "mps":
        return torch.device("mps")
    return torch.device("cpu")


class Experiment:
    def __init__(self, cfg: DictConfig, out_dir: Path | str, name: str | None = None):
        self.cfg = cfg
        self.dir = Path(out_dir)
        self.name = name or self.dir.name
        self.device = resolve_device(cfg.trainer)
        self.iterations = int(cfg.train.iterations)
        self.rounds = int(cfg.prune.rounds)
        self.rewind = int(cfg.rewind_iteration)
        self.seed = int(cfg.seed)
        self.controls = [str(c) for c in cfg.controls]
        self.datamodule = None
        self.tracker: Tracker | None = None
        self.extra_callbacks: list = []  # Lightning callbacks added to every round's Trainer (tests, tools)

    # ------------------------------------------------------------------ set-up
    def claim_folder(self) -> None:
        """Refuse a folder that holds an experiment with another configuration."""
        self.dir.mkdir(parents=True, exist_ok=True)
        marker = self.dir / "experiment.json"
        digest = config_hash(self.cfg)
        if marker.exists():
            found = read_json(marker).get("config_hash")
            if found != digest:
                raise ExperimentError(
                    f"{self.dir} holds an experiment with another configuration (hash {found}, this one is "
                    f"{digest}). Choose another folder with hydra.run.dir=PATH, or move that one away."
                )
        else:
            atomic_write_json(marker, {"config_hash": digest, "name": self.name})
        atomic_write_text_config(self.dir / "config.yaml", self.cfg)

    def setup_data(self):
        if self.datamodule is None:
            dm = hydra.utils.instantiate(self.cfg.data)
            dm.setup()
            if self.cfg.train.get("augment", False):
                from lth.data.augment import random_crop_flip

                dm.augment = random_crop_flip
            self.datamodule = dm.to(self.device)
        return self.datamodule

    def new_model(self, seed: int) -> nn.Module:
        dm = self.datamodule
        return build_model(self.cfg.model.arch, dm.input_shape, dm.num_classes, seed)

    def initial_state(self) -> dict[str, torch.Tensor]:
        """θ0: every parameter and buffer of the freshly initialised network (saved once)."""
        path = self.dir / "theta0.pt"
        if path.exists():
            return load_tensors(path)
        state = {k: v.detach().clone() for k, v in self.new_model(self.seed).state_dict().items()}
        atomic_torch_save(state, path)
        return state

    # ------------------------------------------------------------------ pruning
    def prunable(self):
        return prunable_tensors(self.new_model(self.seed))

    def next_mask(self, mask: Mask, weights: dict, level: int) -> Mask:
        """The mask of ``level`` from the previous mask and the trained weights that drive pruning."""
        p = self.cfg.prune
        tensors = self.prunable()
        exempt = list(p.get("exempt", []) or [])
        oneshot = p.get("schedule", "iterative") == "oneshot"
        if oneshot:  # prune the dense network's weights straight to this level
            mask = Mask({n: torch.ones_like(m) for n, m in mask.items()})

        def effective(rate: float) -> float:
            return 1.0 - (1.0 - rate) ** level if oneshot else rate

        if p.scheme == "layerwise":
            rates = {t.name: 0.0 if is_exempt(t, exempt) else effective(float(p.rates[t.kind])) for t in tensors}
            return prune_layerwise(mask, weights, rates)
        if p.scheme == "global":
            names = [t.name for t in tensors if not is_exempt(t, exempt)]
            return prune_global(mask, weights, effective(float(p.rate)), names)
        raise ExperimentError(f"prune.scheme={p.scheme!r} is not one of layerwise, global")

    def mask_for_round(self, level: int, previous: Mask | None, driver_weights: dict | None) -> Mask:
        path = self.dir / f"round_{level:02d}" / "mask.pt"
        if path.exists():
            return sync_mask(Mask.load(path))
        if level == 0:
            mask = Mask.dense(self.new_model(self.seed))
        else:
            mask = self.next_mask(previous, driver_weights, level)
        mask = sync_mask(mask)  # DDP: rank 0's mask on every rank (checked by checksum)
        mask.save(path)
        return mask

    # ------------------------------------------------------------------ training
    def optimizer_settings(self) -> OptimizerSettings:
        o = self.cfg.optimizer
        lr = float(self.cfg.warmup.lr) if self.cfg.lr_warmup else float(o.lr)
        return OptimizerSettings(
            name=str(o.name), lr=lr, momentum=float(o.get("momentum", 0.0)),
            weight_decay=float(o.get("weight_decay", 0.0)), nesterov=bool(o.get("nesterov", False)),
            compile=bool(o.get("compile", False)),
        )

    def lr_schedule(self) -> LRSchedule:
        s = self.cfg.schedule
        warm = int(self.cfg.warmup.iterations) if self.cfg.lr_warmup else 0
        return LRSchedule(warmup_iterations=warm, milestones=tuple(int(m) for m in s.milestones), gamma=float(s.gamma))

    def make_trainer(self, branch_dir: Path, steps: int, callbacks: list) -> pl.Trainer:
        t = self.cfg.trainer
        progress_bar = bool(t.get("enable_progress_bar", True))
        if progress_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
            # Redrawing the bar every step is a measurable share of a small network's step
            # (BENCHMARKS.md); every 25 steps is still live.
            callbacks = [*callbacks, TQDMProgressBar(refresh_rate=25)]
        return pl.Trainer(
            accelerator=str(t.accelerator),
            devices=t.devices,
            strategy=t.get("strategy", "auto"),
            precision=t.get("precision", "32-true"),
            deterministic=bool(t.get("deterministic", False)),
            max_steps=steps,
            max_epochs=-1,
            logger=self.tracker.logger if self.tracker and self.tracker.active else False,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
            enable_checkpointing=True,
            enable_model_summary=False,
            enable_progress_bar=progress_bar,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            log_every_n_steps=int(self.cfg.eval_every),
            default_root_dir=str(branch_dir),
            profiler=t.get("profiler") or NoProfiler(),
        )

    def train(self, level: int, branch: str, mask: Mask, init: dict, start: int, keep_state: bool,
              model_seed: int | None = None, capture_at: int | None = None) -> Trained:
        bdir = self.dir / f"round_{level:02d}" / branch
        done = bdir / "row.json"
        if done.exists():
            row = read_json(done)
            state = None
            if keep_state and not row.get("diverged"):
                try:
                    state = load_tensors(bdir / "final.pt")
                except Exception as exc:
                    log.warning("round %d %s: final weights unreadable (%s); retraining it", level, branch, exc)
                    done.unlink()
                    return self.train(level, branch, mask, init, start, keep_state, model_seed, capture_at)
            for stale in (bdir / "checkpoints").glob("*.ckpt"):  # left by a kill between row.json and clean-up
                stale.unlink()
            log.info("round %d %s: already complete (%.2f%% remaining), skipped", level, branch, row["weights_remaining"])
            return Trained(row, state)

        model = self.new_model(self.seed if model_seed is None else model_seed)
        model.load_state_dict(init)
        mask.apply_(model)
        end = self.iterations
        module = LotteryModule(model, mask, self.optimizer_settings(), self.lr_schedule(), start, end,
                               mask_gradients=bool(self.cfg.get("mask_gradients", False)))
        dm = self.datamodule
        evaluation = PeriodicEvaluation(
            {s: dm.splits[s] for s in ("val", "test")}, int(self.cfg.eval_every), end, int(self.cfg.eval_batch_size),
            on_point=(lambda p: self.tracker.curve_point(level, branch, p)) if self.tracker else None,
        )
        ckpt_dir = bdir / "checkpoints"
        callbacks = [
            evaluation,
            RoundCheckpoint(dirpath=str(ckpt_dir), filename="last", every_n_train_steps=int(self.cfg.checkpoint_every),
                            save_top_k=-1, save_last=False, enable_version_counter=False),
        ]
        if capture_at is not None:
            callbacks.append(CaptureState(capture_at, self.dir / "theta_k.pt"))
        callbacks += self.extra_callbacks
        trainer = self.make_trainer(bdir, end - start, callbacks)
        group = steps_per_call(int(self.cfg.trainer.get("steps_per_call", 1)), start, end, int(self.cfg.eval_every),
                               int(self.cfg.checkpoint_every), capture_at or 0)
        stream = dm.train_stream(int(self.cfg.train.batch_size), self.seed, end,
                                 position=lambda: module.iteration, length=end - start, group=group)
        resume = usable_checkpoint(ckpt_dir / "last.ckpt")
        remaining = mask.weights_remaining()
        log.info("round %d/%d %s: %.2f%% of weights remaining, iterations %d..%d%s", level, self.rounds, branch,
                 remaining, start, end, f" (resuming from {resume.name})" if resume else "")
        t0 = time.perf_counter()
        trainer.fit(module, train_dataloaders=stream, ckpt_path=str(resume) if resume else None, weights_only=True)
        wall = time.perf_counter() - t0

        row = {"round": level, "branch": branch, "weights_remaining": remaining}
        diverged = evaluation.diverged
        try:
            row.update(summarize(evaluation.curve))
        except DivergedError as exc:
            diverged = diverged or str(exc)
        if diverged:
            log.error("round %d %s diverged: %s. Recorded as diverged; lower optimizer.lr or enable lr_warmup=true.",
                      level, branch, diverged)
        row.update({"train_time_s": round(evaluation.elapsed or wall, 3), "diverged": bool(diverged),
                    "diverged_reason": diverged or ""})
        row.update({f"remaining:{n}": round(v, 4) for n, v in mask.layer_remaining().items()})
        atomic_write_csv(bdir / "curve.csv", evaluation.curve)
        state = None
        if not diverged:
            state = {k: v.detach().cpu().clone() for k, v in module.model.state_dict().items()}
            if keep_state:
                atomic_torch_save(state, bdir / "final.pt")
        atomic_write_json(done, row)  # the completion marker, written last
        for ckpt in ckpt_dir.glob("*.ckpt"):
            ckpt.unlink(missing_ok=True)
        if self.tracker:
            self.tracker.level(row)
        log.info("round %d %s: test acc at early stop %.4f (iteration %s), final %.4f, %.1fs", level, branch,
                 row.get("test_acc_at_es", float("nan")), row.get("es_iteration"), row.get("final_test_acc", float("nan")),
                 wall)
        return Trained(row, state)

    # ------------------------------------------------------------------ the loop
    def run(self) -> list[dict]:
        self.claim_folder()
        self.setup_data()
        theta0 = self.initial_state()
        self.tracker = Tracker(self.cfg, self.dir, self.name, run_id=f"{self.name[-8:]}-{config_hash(self.cfg)}")
        rows: list[dict] = []
        try:
            rows = self._rounds(theta0)
        finally:
            figures = self.write_reports(rows) if rows else []
            self.tracker.finish(rows, figures)
        print(f"\nLottery-ticket experiment {self.name}\n{format_table(rows)}\n\nResults in {self.dir}", flush=True)
        return rows

    def _rounds(self, theta0: dict) -> list[dict]:
        rows: list[dict] = []
        continue_strategy = self.cfg.strategy == "continue"
        mask: Mask | None = None
        driver: dict | None = None  # trained weights that the next mask is computed from
        rewind_state = theta0
        for level in range(self.rounds + 1):
            mask = self.mask_for_round(level, mask, driver)
            if level == 0:
                capture = self.rewind if self.rewind > 0 else None
                dense = self.train(0, "ticket", mask, theta0, 0, keep_state=True, capture_at=capture)
                rows.append(dense.row)
                if dense.row.get("diverged"):
                    write_results(rows, self.dir)  # the diverged row is recorded before stopping
                    raise ExperimentError(f"the dense round diverged ({dense.row['diverged_reason']}); "
                                          "lower optimizer.lr or set lr_warmup=true")
                if self.rewind > 0:
                    rewind_state = load_tensors(self.dir / "theta_k.pt")
                driver = dense.state
                continue
            start = self.rewind
            ticket = self.train(level, "ticket", mask, rewind_state, start, keep_state=not continue_strategy)
            rows.append(ticket.row)
            if continue_strategy:
                continued = self.train(level, "continued", mask, driver, start, keep_state=True)
                rows.append(continued.row)
                driver = continued.state
            else:
                driver = ticket.state
            if driver is None:
                write_results(rows, self.dir)
                raise ExperimentError(f"round {level} diverged, so there are no trained weights to prune further; "
                                      "lower optimizer.lr or set lr_warmup=true")
            if "reinit" in self.controls:
                fresh = self.new_model(self.seed + REINIT_SEED_OFFSET + level).state_dict()
                rows.append(self.train(level, "reinit", mask, fresh, start, keep_state=False,
                                       model_seed=self.seed + REINIT_SEED_OFFSET + level).row)
            if "random_prune" in self.controls:
                rmask_path = self.dir / f"round_{level:02d}" / "random_prune_mask.pt"
                if rmask_path.exists():
                    rmask = Mask.load(rmask_path)
                else:
                    rmask = random_mask_like(mask, self.seed + RANDOM_MASK_SEED_OFFSET + level)
                    rmask = sync_mask(rmask)
                    rmask.save(rmask_path)
                rows.append(self.train(level, "random_prune", rmask, rewind_state, start, keep_state=False).row)
            write_results(rows, self.dir)
        return rows

    # ------------------------------------------------------------------ outputs
    def write_reports(self, rows: list[dict]) -> list[Path]:
        write_results(rows, self.dir)
        ok = [r for r in rows if not r.get("diverged")]
        series: dict[str, list[dict]] = {}
        for r in ok:
            series.setdefault(r["branch"], []).append(r)
        figure = self.dir / "lottery_ticket.png"
        title = f"{self.cfg.model.name} on {self.datamodule.name}: {self.cfg.prune.scheme} pruning"
        plot_sparsity_figure(series, figure, title)
        curves = {}
        for r in ok:
            if r["branch"] != "ticket":
                continue
            path = self.dir / f"round_{r['round']:02d}" / "ticket" / "curve.csv"
            if path.exists():
                curves[f"{r['weights_remaining']:.1f}%"] = _read_curve(path)
        curve_fig = self.dir / "learning_curves.png"
        plot_learning_curves(curves, curve_fig, f"{title}: ticket learning curves")
        return [figure, curve_fig]


def _read_curve(path: Path) -> list[dict]:
    import csv

    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def atomic_write_text_config(path: Path, cfg: DictConfig) -> None:
    from lth.storage import atomic_write_text

    container = copy.deepcopy(OmegaConf.to_container(cfg, resolve=True))
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(container)))


def steps_per_call(limit: int, *iterations: int) -> int:
    """The largest group size <= ``limit`` that divides every iteration given (round start and end,
    evaluation and checkpoint periods, θK), so that every group boundary Lightning's callbacks see
    includes each of those iterations."""
    g = math.gcd(*iterations)
    return next(k for k in range(min(limit, g) or 1, 0, -1) if g % k == 0)
