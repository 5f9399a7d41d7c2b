"""A level's branch trainings, one at a time or stacked (``stack_networks=auto|true|false``).

The networks of one level are independent: their masks, start states and data orders depend
only on earlier levels. ``stack_networks`` decides how they train:

- ``false``: one at a time, in registry order (lth's behaviour before stacking);
- ``true``: every group of networks of one shape and start iteration trains as one stack
  (``lth.training.stacked_round``), on any device; the CPU tests use it;
- ``auto`` (default): stacked on a CUDA device, where the batched kernels and the CUDA graph
  replace hundreds of launches per step (BENCHMARKS.md), for networks of up to 5M parameters
  (``AUTO_MAX_PARAMETERS``: whose steps are launch latency); one at a time on the CPU, where two
  cores gain little from it.

The dense round (level 0's ticket) trains first, as a stack of one where stacking is on (the CUDA
graph's speed for one network), alone when it also captures θK (``rewind_iteration > 0``).
Never stacked (trained alone whatever the setting): networks with dropout (``lth.training.stacked.unstackable``), data-parallel
(DDP) or mixed-precision training. Rows come back in registry order either way, and each
branch's analyses (``Branch.finish``, e.g. the instability barrier, which reads the ticket's
final weights) run after the whole level has trained. :func:`train_together` also stacks the
trainings of several experiments: the seed trials of a sweep (``hydra/launcher=lth_seeds``,
``lth.lottery.seeds``).
"""

from __future__ import annotations

import logging

from lth.training.round import Training
from lth.training.stacked import stack_signature, unstackable

log = logging.getLogger("lth")

PRECISIONS = ("32-true", "32", "64-true", "64")  # plain precision: no autocast around the captured step
# auto stacks networks up to this size: small networks, whose step is launch latency (LeNet, Conv-2/4/6,
# ResNet-20); the VGGs' steps are arithmetic, which a stack does not make cheaper
AUTO_MAX_PARAMETERS = 5_000_000


def why_alone(cfg, model) -> str | None:
    """Why ``model`` trains alone although stacking is on, or None."""
    why = unstackable(model)
    if why is None and str(cfg.get("stack_networks", "auto")) == "auto":
        size = sum(p.numel() for p in model.parameters())
        if size > AUTO_MAX_PARAMETERS:
            why = f"stack_networks=auto stacks networks of up to {AUTO_MAX_PARAMETERS:,} parameters, this one has {size:,}"
    return why


def stacking_on(cfg, device) -> bool:
    """Whether ``stack_networks`` asks for stacking on ``device`` (before per-network checks)."""
    setting = cfg.get("stack_networks", "auto")
    if setting is False or str(setting).lower() == "false":
        return False
    tc = cfg.trainer
    if "ddp" in str(tc.get("strategy", "auto")) or int(tc.get("devices", 1) or 1) > 1 \
            or str(tc.get("precision", "32-true")) not in PRECISIONS:
        if setting is True:
            log.warning("stack_networks=true: trained one at a time (stacking needs one device and 32- or 64-bit "
                        "precision)")
        return False
    return setting is True or str(setting).lower() == "true" or device.type == "cuda"


def train_one(lot, t: Training) -> dict:
    """One training (or its finished row): as a stack of one where stacking is on and possible, else alone."""
    if t.capture_at is None and stacking_on(lot.cfg, lot.device) and why_alone(lot.cfg, t.model) is None \
            and lot.trainer.finished(t.folder, t.keep_final) is None:
        from lth.training.stacked_round import train_stacked

        return train_stacked(lot.trainer, [t])[0]
    return lot.trainer.train(t)


def train_stacked_level(lot, todo: list[Training]) -> list[dict]:
    """The rows of a level's pending trainings ``todo`` (in its order): each group of one shape and
    start iteration as one stack, a network that cannot be stacked alone."""
    return train_together([(lot, t) for t in todo])


def train_together(todo: list[tuple]) -> list[dict]:
    """The rows of pending trainings ``(lottery, training)`` (in order), of one experiment or of the
    seed trials of one setting (``lth.lottery.seeds``): each group of one shape and start iteration as
    one stack, trained with its first experiment's ``RoundTrainer`` (the experiments of a stack share
    their data and differ at most in ``seed``, which a training carries in its own start state, mask
    and data order); a network that cannot be stacked alone, with its own experiment's."""
    rows: list[dict | None] = [None] * len(todo)
    groups: dict[tuple, list[int]] = {}
    for i, (lot, t) in enumerate(todo):
        why = why_alone(lot.cfg, t.model)
        if why:
            log.info("round %d %s trains alone: %s", t.level, t.branch, why)
            rows[i] = lot.trainer.train(t)
            continue
        groups.setdefault((t.start_iteration, stack_signature(t.model)), []).append(i)
    from lth.training.stacked_round import train_stacked

    for group in groups.values():
        for i, row in zip(group, train_stacked(todo[group[0]][0].trainer, [todo[i][1] for i in group])):
            rows[i] = row
            todo[i][0].progress.training_finished(row["train_time_s"] / len(group))
    return rows
