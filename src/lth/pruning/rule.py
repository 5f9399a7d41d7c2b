"""The pruning rule of an experiment: which tensors, at which rates, from which weights.

- ``layerwise``: each tensor loses its kind's rate (``model.rates.conv|fc|output``) of the weights it
  still has; ``global``: one magnitude threshold over all non-exempt tensors (``prune.rate``).
- ``iterative`` (the paper's IMP): level l is pruned from level l-1's mask and the weights the
  search branch reached at level l-1.
- ``oneshot``: level l is pruned in one step from the dense mask and the *dense round's* trained
  weights, to the sparsity l iterative rounds would reach: ``1 - (1-p)^l`` of each count.

Exempt tensors (``prune.exempt``: kinds or globs over names) keep every weight.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from lth.pruning.magnitude import prune_global, prune_layerwise
from lth.pruning.mask import Mask
from lth.pruning.prunable import is_exempt, prunable_tensors


class PruningRule:
    def __init__(self, prune_cfg: DictConfig, model: nn.Module):
        self.scheme = str(prune_cfg.scheme)
        self.oneshot = str(prune_cfg.get("schedule", "iterative")) == "oneshot"
        exempt = list(prune_cfg.get("exempt", []) or [])
        self.tensors = prunable_tensors(model)
        self.names = [t.name for t in self.tensors if not is_exempt(t, exempt)]  # the prunable, non-exempt tensors
        if self.scheme == "layerwise":
            self.rates = {t.name: float(prune_cfg.rates[t.kind]) for t in self.tensors if t.name in self.names}
        elif self.scheme == "global":
            self.rate = float(prune_cfg.rate)
        else:
            raise ValueError(f"prune.scheme={self.scheme!r} is not one of layerwise, global")

    def weights_source(self, level: int) -> int:
        """The level whose trained weights level ``level`` is pruned from (0: the dense round)."""
        return 0 if self.oneshot else level - 1

    def mask_at(self, level: int, previous: Mask, weights: dict) -> Mask:
        """The mask of ``level`` >= 1, given the mask of level-1 and the weights of
        :meth:`weights_source` (``level``)."""
        if self.oneshot:
            previous = Mask({n: m.new_ones(m.shape) for n, m in previous.items()})
            steps = level
        else:
            steps = 1

        def rate(p: float) -> float:
            return 1.0 - (1.0 - p) ** steps

        if self.scheme == "layerwise":
            return prune_layerwise(previous, weights, {n: rate(p) for n, p in self.rates.items()})
        return prune_global(previous, weights, rate(self.rate), self.names)
