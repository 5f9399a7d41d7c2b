"""The seed trials of one setting trained level by level as one stack (``hydra/launcher=lth_seeds``).

The experiments of a sweep that differ only in ``seed`` have networks of one shape at every level.
:func:`train_trials` holds every trial's experiment (its own folder, lock, layout and masks) and
runs their levels in lockstep: the dense rounds of all seeds as one stack, then at each level every
seed's pending trainings (:meth:`Lottery.pending`) together, each group of one shape and start
iteration as one stack (``lth.lottery.stacking.train_together``: each network with its own mask,
start state, data order and early stop), and each experiment finishes its level
(:meth:`Lottery.finish_level`: its analyses) and computes its next masks from its own ticket.

It only trains: every network's files land in its own experiment's folder as they would alone
(``curve.csv``, ``final.pt``, ``row.json``, ``stacked: N``), so each seed's job, run afterwards as
usual, finds its networks trained and writes its results.csv, figures, W&B run and report entry
(as a resumed experiment does). Finished trainings are skipped per seed, so trials at different
levels resume together. A trial that cannot go on (its folder refused, its search diverged) leaves
the stack: its own job trains the rest and reports the problem as usual.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lth.data.integrity import DatasetCorruptError
from lth.data.torchvision_files import DatasetNotFoundError
from lth.identity import dense_hash
from lth.lottery.dense import dense_to_train, locked
from lth.lottery.layout import experiment_lock
from lth.lottery.plan import ExperimentError, Lottery
from lth.lottery.stacking import stacking_on, train_together
from lth.storage import CorruptFileError

log = logging.getLogger("lth")
# a trial that raises one of these leaves the stack; its own job meets the same problem and reports it
LEAVES = (ExperimentError, CorruptFileError, DatasetNotFoundError, DatasetCorruptError, OSError)


def why_not_stacked(cfgs: list[DictConfig]) -> str | None:
    """Why the trials ``cfgs`` are not trained as one stack, or None."""
    from lth.training.device import resolve_device

    if len(cfgs) < 2:
        return "a single experiment"
    if len({int(c.seed) for c in cfgs}) < len(cfgs):
        return "two jobs with the same seed"
    plain = [OmegaConf.to_container(c, resolve=True) for c in cfgs]
    if any({k: v for k, v in p.items() if k != "seed"} != {k: v for k, v in plain[0].items() if k != "seed"}
           for p in plain):
        return "their configurations differ in more than seed"
    if not stacking_on(cfgs[0], resolve_device(cfgs[0].trainer)):
        return f"stack_networks={cfgs[0].get('stack_networks', 'auto')} does not stack on this device"
    return None


def train_trials(trials: list[tuple[DictConfig, Path]], lottery: type[Lottery] = Lottery) -> list[Path]:
    """Train every network of the experiments ``trials`` (``(cfg, folder)``, one setting, distinct
    seeds) level by level as stacks; returns the folders of the trials that stayed in the stack to
    the end. ``lottery``: the experiment class (tests: float64)."""
    with contextlib.ExitStack() as held:
        lots: list[Lottery] = []
        for cfg, folder in trials:
            try:
                held.enter_context(experiment_lock(Path(folder)))
                lot = lottery(cfg, folder)
                if lots:  # one setting: one dataset, loaded once and shared by the stacks
                    lot.datamodule = lots[0].datamodule
                lot.setup_data()
                lot.claim_folder()
                lots.append(lot)
            except LEAVES as exc:
                log.warning("seed %s trains in its own job: %s", cfg.seed, exc)
        if len(lots) < 2:
            return [lot.dir for lot in lots]
        torch.set_num_threads(int(lots[0].cfg.trainer.get("torch_threads", 1)))  # as each job alone
        log.info("seeds %s: every level's networks trained as one stack", ", ".join(str(lot.seed) for lot in lots))
        for level in range(max(lot.rounds for lot in lots) + 1):
            if level == 0:
                _dense_rounds(lots)
            pending = {}
            for lot in [lot for lot in lots if level <= lot.rounds]:
                try:
                    pending[lot] = lot.pending(level)
                except LEAVES as exc:
                    log.warning("seed %d leaves the stack at round %d (its own job goes on): %s", lot.seed, level, exc)
                    lots.remove(lot)
            todo = [(lot, t) for lot, (_, trainings) in pending.items() for t in trainings]
            for (lot, t), row in zip(todo, train_together(todo)):
                pending[lot][0][t.branch] = row
            for lot, (rows, _) in pending.items():
                search = rows[lot.search if level else "ticket"]
                lot.finish_level(level, rows)
                if search["diverged"]:  # no weights to prune further: its own job records and reports it
                    log.warning("seed %d: round %d's search diverged; it leaves the stack", lot.seed, level)
                    lots.remove(lot)
        return [lot.dir for lot in lots]


def _dense_rounds(lots: list[Lottery]) -> None:
    """Level 0's ticket of every trial not trained yet, as one stack (each store locked as alone)."""
    with contextlib.ExitStack() as held:
        todo = []
        for lot in lots:
            held.enter_context(locked(lot.layout.dense_store(dense_hash(lot.cfg))))
            t = dense_to_train(lot)
            if t is not None:
                todo.append((lot, t))
        if todo:
            train_together(todo)
