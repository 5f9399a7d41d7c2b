"""Learning-rate schedule: optional linear warm-up from 0, then step decay at milestones.

Expressed as a multiplier of the peak learning rate for ``torch.optim.lr_scheduler.LambdaLR``.
The multiplier is a function of the absolute training iteration, so a round rewound to
iteration K starts with the learning rate of iteration K.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LRSchedule:
    warmup_iterations: int = 0
    milestones: Sequence[int] = field(default_factory=tuple)
    gamma: float = 0.1

    def factor(self, iteration: int) -> float:
        f = 1.0
        if self.warmup_iterations > 0 and iteration < self.warmup_iterations:
            f = iteration / self.warmup_iterations
        for m in self.milestones:
            if iteration >= m:
                f *= self.gamma
        return f

    def is_constant(self, start: int, end: int) -> bool:
        """True when the multiplier is the same for every iteration in ``[start, end)``."""
        if self.warmup_iterations > 0 and start < self.warmup_iterations:
            return False
        return not any(start < m < end for m in self.milestones)
