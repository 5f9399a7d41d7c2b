"""Multi-process (DDP) helpers: the mask is computed once, on rank 0, and identical on every rank.

With ``trainer=ddp`` every rank runs the whole prune-rewind loop (Lightning's ``ddp`` starts
the ranks as copies of the command), each round's ``Trainer`` joins the same process group,
only rank 0 writes files and talks to W&B (``lth.storage.is_writer``), and each rank takes its
share of every global batch (``lth.data.stream``).
"""

from __future__ import annotations

import hashlib
import logging
import os

import torch

log = logging.getLogger("lth")


def local_device_index() -> int:
    """The GPU of this process: LOCAL_RANK (Lightning, torchrun) or SLURM_LOCALID (srun)."""
    for var in ("LOCAL_RANK", "SLURM_LOCALID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _group():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def mask_checksum(mask) -> int:
    h = hashlib.sha1()
    for name in sorted(mask):
        h.update(name.encode())
        h.update(mask[name].detach().to("cpu", torch.uint8).contiguous().numpy().tobytes())
    return int(h.hexdigest()[:15], 16)


def sync_mask(mask):
    """Broadcast ``mask`` from rank 0 and check, by an all-gather of checksums, that every rank
    holds the same one. A no-op without a process group of more than one process."""
    dist = _group()
    if dist is None:
        return mask
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    out = {}
    for name in sorted(mask):
        t = mask[name].to(device=device, dtype=torch.uint8).contiguous()
        dist.broadcast(t, src=0)
        out[name] = t.to(device=mask[name].device, dtype=torch.bool)
    synced = type(mask)(out)
    sums = torch.tensor([mask_checksum(synced)], dtype=torch.int64, device=device)
    gathered = [torch.zeros_like(sums) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, sums)
    values = [int(g.item()) for g in gathered]
    if len(set(values)) != 1:
        raise RuntimeError(f"masks differ across ranks after broadcast: checksums {values}")
    log.info("mask identical on all %d ranks (checksum %x)", len(values), values[0])
    return synced


def barrier() -> None:
    """Wait until every rank is here: files rank 0 wrote before it are then readable by all."""
    dist = _group()
    if dist is not None:
        dist.barrier()
