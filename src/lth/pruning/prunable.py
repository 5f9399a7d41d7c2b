"""Which tensors are prunable, and of which kind.

Following the paper, only the weights of convolutional and linear layers are
prunable; biases and BatchNorm parameters never are. Each prunable tensor has a
kind: ``conv``, ``fc`` (hidden fully-connected) or ``output`` (the last linear
layer), which selects its per-round rate under layer-wise pruning. Needs no torch until
:func:`prunable_tensors` is called (the configuration's checks use the rest).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class PrunableTensor:
    name: str  # parameter name, e.g. "layers.0.weight"
    kind: str  # conv | fc | output
    numel: int


def prunable_tensors(model: nn.Module) -> list[PrunableTensor]:
    """Conv and linear weights of ``model`` in module order; the last linear is ``output``."""
    from torch import nn

    return tensors([(f"{name}.weight" if name else "weight", "fc" if isinstance(m, nn.Linear) else "conv",
                     m.weight.numel()) for name, m in model.named_modules()
                    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))])


def tensors(found: list[tuple[str, str, int]]) -> list[PrunableTensor]:
    """``(name, conv|fc, numel)`` in module order as prunable tensors: the last fc is the ``output``."""
    last = max((i for i, (_, kind, _) in enumerate(found) if kind == "fc"), default=None)
    return [PrunableTensor(name, "output" if i == last else kind, numel) for i, (name, kind, numel) in enumerate(found)]


def is_exempt(tensor: PrunableTensor, exempt: list[str] | tuple[str, ...]) -> bool:
    """An entry of ``exempt`` names a kind (``output``) or a glob over tensor names (``*shortcut*``)."""
    for pattern in exempt:
        if pattern == tensor.kind or fnmatch.fnmatchcase(tensor.name, pattern):
            return True
    return False


def prune_count(rate: float, alive: int) -> int:
    """How many of ``alive`` weights a round at ``rate`` removes (round half up)."""
    return min(alive, int(rate * alive + 0.5))
