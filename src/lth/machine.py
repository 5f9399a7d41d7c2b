"""What this machine has for a configuration: a CUDA GPU, the device, a C++ compiler for torch.compile. Decided
without importing torch where the machine's answer is certain, so that the configuration's checks
(:mod:`lth.validation`) refuse what cannot run before torch is imported."""

from __future__ import annotations

import glob
import os
import shutil
import sys
from typing import Any


def has_cuda() -> bool:
    """torch finds a CUDA GPU; on Linux without NVIDIA's driver (no /proc/driver/nvidia, no /dev/nvidia*) or on
    macOS it cannot, which is answered without importing torch."""
    if sys.platform == "darwin" or (sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia")
                                    and not glob.glob("/dev/nvidia*")):
        return False
    import torch

    return torch.cuda.is_available()


def device_type(trainer_cfg: Any) -> str:
    """cuda, mps or cpu: ``trainer.accelerator``, where ``auto`` takes a CUDA GPU if there is one."""
    accel = str(trainer_cfg.get("accelerator", "auto"))
    if accel in ("gpu", "cuda") or (accel == "auto" and has_cuda()):
        return "cuda"
    return "mps" if accel == "mps" else "cpu"


def inductor_cxx() -> str:
    """The C++ compiler torch.compile's Inductor runs on the CPU (``config.cpp.cxx``): ``$CXX`` or the platform's."""
    return os.environ.get("CXX", {"darwin": "clang++", "win32": "cl"}.get(sys.platform, "g++"))


def missing_compiler(device: str) -> str | None:
    """Why ``torch.compile`` cannot build an update on ``device`` (a type or ``torch.device``), or None if it can."""
    if str(device).partition(":")[0] == "cpu" and not shutil.which(inductor_cxx()):
        return f"the C++ compiler {inductor_cxx()!r} is not on PATH"
    return None
