"""Checkpoints that survive being killed: atomic saves, checked loads, and θK capture."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from lth.storage import atomic_torch_save, atomic_write_bytes

log = logging.getLogger("lth")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file and renamed; read with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(Path(path), buf.getvalue())

    def load_checkpoint(self, path, map_location=None, weights_only=True):
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def usable_checkpoint(path: Path) -> Path | None:
    """``path`` if it is a readable checkpoint; a corrupt one is moved aside (``.corrupt``) and None returned."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if "state_dict" not in state or "global_step" not in state:
            raise ValueError("not a Lightning checkpoint")
    except Exception as exc:
        bad = path.with_suffix(".corrupt")
        path.replace(bad)
        log.warning("checkpoint %s is corrupt (%s: %s); moved to %s, redoing that round from its start",
                    path, exc.__class__.__name__, exc, bad.name)
        return None
    return path


class CaptureState(pl.Callback):
    """Saves every parameter and buffer at absolute iteration ``at`` (θK, for rewinding)."""

    def __init__(self, at: int, path: Path):
        self.at = at
        self.path = Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.iteration == self.at and not self.path.exists():
            state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}
            atomic_torch_save(state, self.path)
