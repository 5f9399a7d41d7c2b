"""The lottery: iterative magnitude pruning with resetting, level by level (Frankle & Carbin 2019).

::

    θ0 <- initial state;  train the dense network (level 0) -> θ_final, θK
    for level in 1..rounds:
        mask  <- prune the pruning rule's rate of the remaining weights of the search branch's
                 trained weights (one-shot: of the dense round's)
        train_level(level): for branch in ticket, [continued], controls..., analyses...:
            train branch's network: its mask, its start state (θK & mask for the ticket), its data order

A level's trainings are independent once its masks and start states are drawn: ``train_level``
trains them one after another or, with ``parallel_branches=N``, N at a time in worker processes
(``lth.lottery.parallel``); the analyses that read several of them (instability) run after all.

Every stage looks on disk first and skips what is complete, so re-running the same command
continues an interrupted experiment and adding a branch trains only that branch.
"""

from __future__ import annotations

import hashlib
import logging
from functools import cached_property
from pathlib import Path

import hydra.utils
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lth.distributed import sync_mask
from lth.identity import dense_hash, experiment_hash
import lth.lottery.registry as registry
from lth.lottery.dense import dense_round
from lth.lottery.layout import FORMAT, ExperimentError, Expected, Layout, check_experiment_json
from lth.lottery.stacking import stacking_on, train_stacked_level
from lth.lottery.outputs import collect_rows, print_summary, write_outputs
from lth.lottery.parallel import BranchPool, parallel_workers
from lth.models import build_model
from lth.progress import ExperimentProgress, LotteryProgressBar
from lth.pruning import Mask
from lth.pruning.rule import PruningRule
from lth.signals import Interrupted
from lth.storage import atomic_torch_save, atomic_write_json, atomic_write_text
from lth.tracking import Tracker
from lth.training.device import resolve_device
from lth.training.round import RoundTrainer, Training

log = logging.getLogger("lth")


def run_id(cfg: DictConfig, folder: Path) -> str:
    """The W&B run of this experiment in this folder: its hash, and the folder's (two folders of one
    configuration are two runs)."""
    return f"{experiment_hash(cfg)}-{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:6]}"


class Lottery:
    def __init__(self, cfg: DictConfig, folder: Path | str, name: str | None = None):
        self.cfg = cfg
        self.layout = Layout(folder)
        self.dir = self.layout.root
        self.name = name or self.dir.name
        self.device = resolve_device(cfg.trainer)
        self.rounds = int(cfg.prune.rounds)
        self.rewind = int(cfg.rewind_iteration)
        self.seed = int(cfg.seed)
        self.search = "continued" if cfg.strategy == "continue" else "ticket"  # whose weights are pruned next
        self.branches = [registry.REGISTRY[n](self) for n in registry.selected(cfg)]
        self.extra_callbacks: list = []  # Lightning callbacks added to every Trainer (tests, tools)
        self.datamodule = None
        self.tracker: Tracker | None = None
        self._masks: dict[int, Mask] = {}
        self.progress = ExperimentProgress(0)
        self.stacked = stacking_on(cfg, self.device)  # stack_networks: a level's networks as one model
        # parallel_branches: worker processes, where the networks are not stacked (stacking takes precedence)
        self.pool = BranchPool(self, 1 if self.stacked else min(parallel_workers(cfg), len(self.branches)))

    # ------------------------------------------------------------------ the loop
    def run(self) -> list[dict]:
        self.claim_folder()
        self.setup_data()
        self.tracker = Tracker(self.cfg, self.dir, self.name, run_id=run_id(self.cfg, self.dir),
                               branch_keys=self.branch_keys)
        planned = sum(self.rounds + 1 - b.first_level + getattr(b, "extra_trainings", 0) for b in self.branches)
        self.progress = ExperimentProgress(planned, levels=self.rounds + 1)
        self.trainer.progress_bar = lambda t: LotteryProgressBar(self.progress, t.level, self.rounds + 1, t.branch,
                                                                 t.mask.weights_remaining())
        rows: list[dict] = []
        torch.set_num_threads(int(self.cfg.trainer.get("torch_threads", 1)))  # as in every worker: same bits
        if self.rounds and len(self.branches) > 1:
            self.pool.warm_up()
        stopping = False  # a signal: results.csv is written, the figures wait for the run that continues
        try:
            for level in range(self.rounds + 1):
                rows += self.train_level(level)
                self.check_search_alive(level, rows)
                collect_rows(self, rows, write=True)
        except Interrupted:
            stopping = True
            raise
        finally:
            self.pool.close()
            figures = write_outputs(self, rows, draw=not stopping) if rows else []
            self.tracker.finish(collect_rows(self, rows), figures)
        print_summary(self, rows)
        self.tracker.announce()  # the ``wandb sync`` command of an offline run: the job's last line
        return rows

    def train_level(self, level: int) -> list[dict]:
        """The rows of every branch at ``level``, in registry order. The seam where a level's trainings
        are scheduled: the dense round first (the others start from its θK), then the remaining
        trainings stacked (``stack_networks``, ``lth.lottery.stacking``), or through ``self.pool``
        (``parallel_branches``), or one after another; then each branch's analyses. (The seed trials
        of a sweep, ``hydra/launcher=lth_seeds``, go through :meth:`pending` and :meth:`finish_level`
        themselves, ``lth.lottery.seeds``.)"""
        rows, todo = self.pending(level)
        if todo and self.stacked:
            trained = train_stacked_level(self, todo)
        elif len(todo) > 1 and self.pool.workers > 1:
            trained = self.pool.train(todo)
            for t, row in zip(todo, trained):
                self.report(row, t.folder)
        else:
            trained = [self.trainer.train(t) for t in todo]
        rows.update({t.branch: row for t, row in zip(todo, trained)})
        return self.finish_level(level, rows)

    def pending(self, level: int) -> tuple[dict[str, dict], list[Training]]:
        """What ``level`` still needs: the rows of its finished trainings (the dense round trained or
        copied here, at level 0) by branch, and its other trainings."""
        rows: dict[str, dict] = {}
        todo: list[Training] = []
        for branch in (b for b in self.branches if level >= b.first_level):
            if level == 0 and branch.name == "ticket":
                rows[branch.name] = dense_round(self)
                continue
            folder = self.layout.branch(level, branch.key)
            row = self.trainer.finished(folder, branch.keep_final)
            if row is not None:
                self.progress.training_skipped()
                rows[branch.name] = row
            else:
                todo.append(Training(level, branch.name, folder, branch.mask(level),
                                     self.model_at(branch.start_state(level)), branch.start_iteration(level),
                                     branch.data_seed(level), branch.keep_final))
        return rows, todo

    def finish_level(self, level: int, rows: dict[str, dict]) -> list[dict]:
        """The level's rows in registry order (``rows``: every branch's, by name), after each branch's
        analyses of its trained network (idempotent: e.g. the instability barrier)."""
        return [b.finish(level, rows[b.name]) for b in self.branches if level >= b.first_level]

    def report(self, row: dict, folder: Path) -> None:
        """To W&B, a training that ran in a worker process: its row and its learning curve."""
        if self.tracker is None or not self.tracker.active:
            return
        self.tracker.level(row, self.layout.read(folder / "curve.csv"))

    def check_search_alive(self, level: int, rows: list[dict]) -> None:
        row = next(r for r in rows if r["round"] == level and r["branch"] == (self.search if level else "ticket"))
        if row["diverged"]:
            collect_rows(self, rows, write=True)  # the diverged row is recorded before stopping
            what = "the dense round" if level == 0 else f"round {level}"
            raise ExperimentError(f"{what} diverged ({row['diverged_reason']}; recorded in results.csv), so there are "
                                  f"no trained weights to prune further; lower optimizer.lr or set lr_warmup=true")

    # ------------------------------------------------------------------ the ticket's masks
    @cached_property
    def branch_keys(self) -> dict[str, str]:
        """Every registered branch's folder name under this experiment's settings (``Branch.key``)."""
        return {name: cls(self).key for name, cls in registry.REGISTRY.items()}

    @cached_property
    def rule(self) -> PruningRule:
        return PruningRule(self.cfg.prune, self.new_model(self.seed))

    def ticket_mask(self, level: int) -> Mask:
        if level not in self._masks:
            self._masks[level] = self._ticket_mask(level)
        return self._masks[level]

    def _ticket_mask(self, level: int) -> Mask:
        path = self.layout.ticket_mask(level)
        if path.exists():
            return sync_mask(Mask(self.layout.read(path)))
        if level == 0:
            mask = Mask.dense(self.new_model(self.seed))
        else:
            source = self.rule.weights_source(level)
            weights = self.final_weights(source, "ticket" if source == 0 else self.search)
            mask = self.rule.mask_at(level, self.ticket_mask(level - 1), weights)
        mask = sync_mask(mask)  # DDP: rank 0's mask on every rank (checked by checksum)
        mask.save(path)
        return mask

    def final_weights(self, level: int, branch: str) -> dict[str, torch.Tensor]:
        return self.layout.read(self.layout.final(level, branch))

    # ------------------------------------------------------------------ states and models
    @cached_property
    def theta0(self) -> dict[str, torch.Tensor]:
        """θ0: every parameter and buffer of the freshly initialised network (saved once)."""
        path = self.layout.theta0
        if path.exists():
            return self.layout.read(path)
        state = {k: v.detach().clone() for k, v in self.new_model(self.seed).state_dict().items()}
        atomic_torch_save(state, path)
        return state

    @property
    def rewind_state(self) -> dict[str, torch.Tensor]:
        """θK, an output of the dense round (θ0 when K = 0)."""
        return self.layout.read(self.layout.theta_k) if self.rewind > 0 else self.theta0

    def new_model(self, seed: int) -> nn.Module:
        dm = self.setup_data()
        return build_model(self.cfg.model.arch, dm.input_shape, dm.num_classes, seed)

    def model_at(self, state: dict[str, torch.Tensor]) -> nn.Module:
        model = self.new_model(self.seed)
        model.load_state_dict(state)
        return model

    # ------------------------------------------------------------------ set-up
    def claim_folder(self) -> None:
        """Refuse a folder of another configuration (or lth version); record this one's identity."""
        digest = experiment_hash(self.cfg)
        self.layout.expected = Expected.of(self.new_model(self.seed))  # what its tensor files must hold
        self.layout.store = self.layout.dense_store(dense_hash(self.cfg))
        try:
            existing = check_experiment_json(self.layout, digest)
        except ValueError as exc:
            raise ExperimentError(str(exc)) from None
        self.layout.verify()  # every file read back is checked before anything is used or changed
        self.dir.mkdir(parents=True, exist_ok=True)
        if not existing:
            atomic_write_json(self.layout.experiment_json, {"config_hash": digest, "name": self.name, "format": FORMAT})
        atomic_write_text(self.layout.config, OmegaConf.to_yaml(OmegaConf.to_container(self.cfg, resolve=True)))

    def setup_data(self):
        if self.datamodule is None:
            data = OmegaConf.to_container(self.cfg.data, resolve=True)
            # keys of other datamodules (data.path of data=imagefolder) are None here: not passed on
            dm = hydra.utils.instantiate({k: v for k, v in data.items() if v is not None})
            dm.setup()
            if self.cfg.train.get("augment", False):
                from lth.data.augment import random_crop_flip

                dm.augment = random_crop_flip
            self.datamodule = dm.to(self.device)
        return self.datamodule

    @cached_property
    def trainer(self) -> RoundTrainer:
        return RoundTrainer(self.cfg, self.setup_data(), self.tracker, self.extra_callbacks)
