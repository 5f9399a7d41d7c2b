"""Train several ``Training``s of one shape as one stack, in one Lightning ``Trainer``, resumable.

Each network's outputs land where ``RoundTrainer.train`` puts them alone (``curve.csv``,
``final.pt``, ``row.json`` in its folder, its curve points and row in the tracker); its row says
``stacked: N``, the number of networks trained together (a network trained alone has no such
entry), and ``train_time_s`` is the stack's wall time. While it trains, the stack's Lightning
checkpoint lives in ``round_NN/.stack-<digest>/`` (the digest names the branches stacked): an
interrupted stack continues from it when the same networks are still to train, and the folder is
removed once every network's row is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import time
from pathlib import Path

import torch

from lth.distributed import barrier
from lth.storage import atomic_torch_save, atomic_write_csv, atomic_write_json
from lth.training.checkpointing import usable_checkpoint
from lth.training.evaluation import DivergedError, summarize
from lth.training.interrupt import SaveOnSignal, stop_cleanly
from lth.training.lean_trainer import RoundCheckpoint
from lth.training.round import Training, lr_schedule, optimizer_settings, steps_per_call
from lth.training.stacked import StackedModule
from lth.training.stacked_eval import StackedEvaluation

log = logging.getLogger("lth")


class StackedStream:
    """Groups of ``(x, y)`` for iterations ``[position(), end)``: ``x`` is ``[batch, ...]`` when every
    network has the same data seed (one batch for all), else ``[N, batch, ...]`` with network ``i``'s
    own batch, the batch its ``BatchStream`` gives alone."""

    def __init__(self, dm, batch_size: int, seeds: list[int], end: int, position, length: int, group: int):
        self.seeds = list(dict.fromkeys(seeds))
        self.index = [self.seeds.index(s) for s in seeds]
        self.streams = [dm.train_stream(batch_size, s, end) for s in self.seeds]
        self.shared = len(self.seeds) == 1
        self.end, self.position, self.length, self.group = end, position, length, group
        self._epoch, self._perms = -1, None

    def __len__(self) -> int:
        return -(-self.length // self.group)

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shared:
            return self.streams[0].batch(iteration)
        first = self.streams[0]
        if first.augment is not None:  # augmentation draws per network: each stream's own batch
            pairs = [self.streams[i].batch(iteration) for i in self.index]
            return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        # BatchStream.batch for every network in one gather: row i of the epoch's permutations is
        # network i's, sliced at this iteration's offset
        epoch, offset = divmod(iteration, first.steps_per_epoch)
        if epoch != self._epoch:
            perms = torch.stack([s.permutation(epoch) for s in self.streams])
            self._perms = perms[torch.tensor(self.index, device=perms.device)]
            self._epoch = epoch
        idx = self._perms[:, offset * first.batch_size : (offset + 1) * first.batch_size]
        return first.x[idx], first.y[idx]

    def __iter__(self):
        for first in range(self.position(), self.end, self.group):
            yield [self.batch(it) for it in range(first, min(first + self.group, self.end))]


def stack_folder(trainings: list[Training]) -> Path:
    names = ",".join(sorted(str(t.folder) for t in trainings))
    return trainings[0].folder.parent / f".stack-{hashlib.sha1(names.encode()).hexdigest()[:10]}"


def train_stacked(rt, trainings: list[Training], cuda_graph: bool = True) -> list[dict]:
    """Train ``trainings`` (same architecture, start iteration and device) as one stack with the
    ``RoundTrainer`` ``rt``'s configuration; returns their rows in order."""
    cfg, end = rt.cfg, int(rt.cfg.train.iterations)
    start = trainings[0].start_iteration
    assert all(t.start_iteration == start and t.capture_at is None for t in trainings)
    for t in trainings:
        t.mask.apply_(t.model)
    n = len(trainings)
    seeds = [t.data_seed for t in trainings]
    module = StackedModule([t.model for t in trainings], [t.mask for t in trainings], optimizer_settings(cfg),
                           lr_schedule(cfg), start, end, shared_data=len(set(seeds)) == 1,
                           mask_gradients=bool(cfg.get("mask_gradients", False)), cuda_graph=cuda_graph)
    on_point = ((lambda i, p: rt.tracker.curve_point(trainings[i].level, trainings[i].branch, p))
                if rt.tracker else None)
    evaluation = StackedEvaluation({s: rt.dm.splits[s] for s in ("val", "test")}, int(cfg.eval_every), end,
                                   int(cfg.eval_batch_size), n, on_point=on_point,
                                   divergence_factor=float(cfg.get("divergence_factor", 0)),
                                   test_curve=bool(cfg.get("test_curve", False)))
    folder = stack_folder(trainings)
    ckpt_dir = folder / "checkpoints"
    names = ", ".join(t.branch for t in trainings)
    where = f"during round {trainings[0].level} (stacked: {names})"
    saver = SaveOnSignal(ckpt_dir / "last.ckpt", where)
    callbacks = [evaluation, saver,
                 RoundCheckpoint(dirpath=str(ckpt_dir), filename="last", every_n_train_steps=int(cfg.checkpoint_every),
                                 save_top_k=-1, save_last=False, enable_version_counter=False)]
    label = dataclasses.replace(trainings[0], branch="+".join(t.branch for t in trainings))  # the progress bar's
    trainer = rt.make_trainer(folder, end - start, callbacks + rt.callbacks, label)
    group = steps_per_call(int(cfg.trainer.get("steps_per_call", 1)), start, end, int(cfg.eval_every),
                           int(cfg.checkpoint_every))
    stream = StackedStream(rt.dm, int(cfg.train.batch_size), seeds, end, position=lambda: module.iteration,
                           length=end - start, group=group)
    resume = usable_checkpoint(ckpt_dir / "last.ckpt")
    log.info("round %d/%d: %d networks stacked (%s), iterations %d..%d%s", trainings[0].level,
             int(cfg.prune.rounds), n, names, start, end, f" (resuming from {resume})" if resume else "")
    t0 = time.perf_counter()
    with stop_cleanly(where, saver):  # a signal at any moment: one interrupted: line (lth.training.interrupt)
        trainer.fit(module, train_dataloaders=stream, ckpt_path=str(resume) if resume else None, weights_only=True)
    wall = time.perf_counter() - t0
    steps = module.steps
    if hasattr(steps, "captures"):
        log.info("CUDA graph: %d capture(s), %d eager step(s)%s", steps.captures, steps.eager_steps,
                 f"; capture failed: {steps.failed}" if steps.failed else "")
    rows = [_finish(rt, t, i, module, evaluation, n, wall) for i, t in enumerate(trainings)]
    shutil.rmtree(folder, ignore_errors=True)
    barrier()
    return rows


def _finish(rt, t: Training, i: int, module: StackedModule, evaluation: StackedEvaluation, n: int, wall: float) -> dict:
    """Network ``i``'s outputs, as ``RoundTrainer.train`` writes them alone."""
    curve, diverged = evaluation.curves[i], evaluation.diverged[i]
    row = {"round": t.level, "branch": t.branch, "weights_remaining": t.mask.weights_remaining()}
    try:
        row.update(summarize(curve))
    except DivergedError as exc:
        diverged = diverged or str(exc)
    if diverged:
        log.error("round %d %s diverged: %s. Recorded as diverged; lower optimizer.lr or enable lr_warmup=true.",
                  t.level, t.branch, diverged)
    row.update({"train_time_s": round(evaluation.elapsed or wall, 3), "diverged": bool(diverged),
                "diverged_reason": diverged or ""})
    row.update({f"remaining:{k}": round(v, 4) for k, v in t.mask.layer_remaining().items()})
    row["stacked"] = n
    atomic_write_csv(t.folder / "curve.csv", curve)
    if t.keep_final and not diverged:
        atomic_torch_save(module.net.state_of(i), t.folder / "final.pt")
    atomic_write_json(t.folder / "row.json", row)
    if rt.tracker:
        rt.tracker.level(row, curve)
    log.info("round %d %s: test acc at early stop %.4f (iteration %s), final %.4f (stacked)", t.level, t.branch,
             row.get("test_acc_at_es", float("nan")), row.get("es_iteration"), row.get("final_test_acc", float("nan")))
    return row
