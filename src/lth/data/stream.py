"""On-device batching: the whole training set lives on the device, batches are index gathers.

The batch for iteration ``i`` is a pure function of ``(seed, i)``: epoch ``i // steps_per_epoch``
uses the permutation drawn from ``(seed, epoch)``, and augmentation draws from ``(seed, i)``.
So every pruning round sees the same data order, a round rewound to iteration K resumes the
data exactly at K, and a run resumed from a checkpoint continues the same sequence.
A per-sample DataLoader is the bottleneck for networks this small; this is not.

Each item is a *group* of ``group`` consecutive batches (a list of ``(x, y)`` pairs), which
``LotteryModule.training_step`` trains on one after the other: Lightning's per-batch loop
machinery then runs once per group instead of once per optimizer step (see BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

_EPOCH_STRIDE = 1_000_003
_STEP_STRIDE = 7_919


class BatchStream:
    """Iterable of groups of ``(x, y)`` batches for iterations ``[position(), end)``.

    ``position`` is read when iteration starts, so a Lightning run resumed from a
    checkpoint (whose global step was restored) continues where it stopped. Groups hold
    ``group`` batches (the last one may hold fewer) and start at ``position()``.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seed: int,
        end: int,
        position: Callable[[], int] = lambda: 0,
        augment: Augment | None = None,
        length: int | None = None,
        group: int = 1,
    ):
        if batch_size > len(x):
            raise ValueError(f"train.batch_size={batch_size} is larger than the training set ({len(x)} examples)")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.seed = seed
        self.end = end
        self.position = position
        self.augment = augment
        self.steps_per_epoch = len(x) // batch_size
        self._length = length if length is not None else end
        if group < 1:
            raise ValueError(f"group={group} must be at least 1")
        self.group = group
        self._perm_epoch = -1
        self._perm: torch.Tensor | None = None

    def __len__(self) -> int:
        """The number of groups (Lightning's batches) in ``length`` iterations."""
        return -(-self._length // self.group)

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            gen = torch.Generator(device=self.x.device).manual_seed(self.seed * _EPOCH_STRIDE + epoch)
            self._perm = torch.randperm(len(self.x), generator=gen, device=self.x.device)
            self._perm_epoch = epoch
        return self._perm

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, offset = divmod(iteration, self.steps_per_epoch)
        idx = self.permutation(epoch)[offset * self.batch_size : (offset + 1) * self.batch_size]
        x, y = self.x[idx], self.y[idx]
        if self.augment is not None:
            gen = torch.Generator(device=x.device).manual_seed(self.seed * _STEP_STRIDE + iteration + 1)
            x = self.augment(x, gen)
        return x, y

    def __iter__(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        rank, world = _shard()
        if world > 1 and self.batch_size % world:
            rank, world = 0, 1  # uneven shards would change the mean gradient: every rank takes the whole batch
        for first in range(self.position(), self.end, self.group):
            batches = []
            for iteration in range(first, min(first + self.group, self.end)):
                x, y = self.batch(iteration)
                # DDP: each rank takes its share of the same global batch; the averaged gradient is
                # the full batch's, so results match one device (up to float rounding).
                batches.append((x[rank::world], y[rank::world]) if world > 1 else (x, y))
            yield batches


def _shard() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
