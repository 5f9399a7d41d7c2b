"""The experiment's mask: tensor name -> bool tensor (True = weight survives)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lth.pruning.prunable import prunable_tensors
from lth.storage import atomic_torch_save, load_tensors


class Mask(dict):
    """A mapping from prunable tensor names to boolean keep-masks (on CPU)."""

    @classmethod
    def dense(cls, model: nn.Module) -> "Mask":
        params = dict(model.named_parameters())
        return cls(
            {t.name: torch.ones_like(params[t.name], dtype=torch.bool, device="cpu") for t in prunable_tensors(model)}
        )

    def remaining(self) -> dict[str, int]:
        return {name: int(m.sum()) for name, m in self.items()}

    def sizes(self) -> dict[str, int]:
        return {name: m.numel() for name, m in self.items()}

    def weights_remaining(self) -> float:
        """Percentage of the prunable weights that survive."""
        total = sum(self.sizes().values())
        return 100.0 * sum(self.remaining().values()) / total

    def layer_remaining(self) -> dict[str, float]:
        """Per-tensor percentage of surviving weights."""
        return {name: 100.0 * float(m.sum()) / m.numel() for name, m in self.items()}

    def apply_(self, model: nn.Module) -> None:
        """Zero the pruned weights of ``model`` in place."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, m in self.items():
                params[name].mul_(m.to(params[name].device, params[name].dtype))

    def save(self, path: Path) -> None:
        atomic_torch_save({name: m.clone() for name, m in self.items()}, path)

    @classmethod
    def load(cls, path: Path) -> "Mask":
        return cls({name: t.bool() for name, t in load_tensors(path).items()})
