"""The training device of a configuration."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from lth.distributed import local_device_index
from lth.machine import device_type


def resolve_device(trainer_cfg: DictConfig) -> torch.device:
    """The device; also sets ``trainer.matmul_precision`` (float32 matmuls: "highest", the exact one, by
    default; "high"/"medium" let CUDA Tensor Cores use TF32/bf16 at lower precision)."""
    torch.set_float32_matmul_precision(str(trainer_cfg.get("matmul_precision", "highest")))
    kind = device_type(trainer_cfg)
    return torch.device("cuda", local_device_index()) if kind == "cuda" else torch.device(kind)  # DDP: this rank's GPU
