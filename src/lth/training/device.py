"""The training device of a configuration."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from lth.distributed import local_device_index


def resolve_device(trainer_cfg: DictConfig) -> torch.device:
    accel = str(trainer_cfg.get("accelerator", "auto"))
    if accel in ("gpu", "cuda") or (accel == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_device_index())  # DDP: this rank's GPU
    if accel == "mps":
        return torch.device("mps")
    return torch.device("cpu")
