"""Which tensors are prunable, and of which kind.

Following the paper, only the weights of convolutional and linear layers are
prunable; biases and BatchNorm parameters never are. Each prunable tensor has a
kind: ``conv``, ``fc`` (hidden fully-connected) or ``output`` (the last linear
layer), which selects its per-round rate under layer-wise pruning.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from torch import nn

@dataclass(frozen=True)
class PrunableTensor:
    name: str  # parameter name, e.g. "layers.0.weight"
    kind: str  # conv | fc | output
    numel: int


def prunable_tensors(model: nn.Module) -> list[PrunableTensor]:
    """Conv and linear weights of ``model`` in module order; the last linear is ``output``."""
    found: list[PrunableTensor] = []
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            kind = "conv"
        elif isinstance(module, nn.Linear):
            kind = "fc"
        else:
            continue
        name = f"{module_name}.weight" if module_name else "weight"
        found.append(PrunableTensor(name, kind, module.weight.numel()))
    linear_idx = [i for i, t in enumerate(found) if t.kind == "fc"]
    if linear_idx:
        last = found[linear_idx[-1]]
        found[linear_idx[-1]] = PrunableTensor(last.name, "output", last.numel)
    return found


def is_exempt(tensor: PrunableTensor, exempt: list[str] | tuple[str, ...]) -> bool:
    """An entry of ``exempt`` names a kind (``output``) or a glob over tensor names (``*shortcut*``)."""
    for pattern in exempt:
        if pattern == tensor.kind or fnmatch.fnmatchcase(tensor.name, pattern):
            return True
    return False
