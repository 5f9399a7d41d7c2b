"""The training device of a configuration."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from lth.distributed import local_device_index


def resolve_device(trainer_cfg: DictConfig) -> torch.device:
    """The device; also sets ``trainer.matmul_precision`` (float32 matmuls: "highest", the exact one, by
    default; "high"/"medium" let CUDA Tensor Cores use TF32/bf16 at lower precision)."""
    torch.set_float32_matmul_precision(str(trainer_cfg.get("matmul_precision", "highest")))
    accel = str(trainer_cfg.get("accelerator", "auto"))
    if accel in ("gpu", "cuda") or (accel == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_device_index())  # DDP: this rank's GPU
    if accel == "mps":
        return torch.device("mps")
    return torch.device("cpu")
