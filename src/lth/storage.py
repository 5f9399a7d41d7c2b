"""Atomic, checked file I/O: every artifact is written to a temporary file and renamed.

A reader therefore sees either the previous complete file or the new complete one,
never a half-written file. Tensors and checkpoints are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class CorruptFileError(RuntimeError):
    """A file on disk exists but cannot be read back."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def global_rank() -> int:
    """This process's rank in a multi-process (DDP) job, from the launcher's environment; 0 when
    there is none. Lightning sets LOCAL_RANK/NODE_RANK, torchrun RANK, srun SLURM_PROCID."""
    env = os.environ
    if env.get("RANK", "").isdigit():
        return int(env["RANK"])
    if env.get("SLURM_PROCID", "").isdigit() and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return int(env["SLURM_PROCID"])
    local, node = env.get("LOCAL_RANK", "0"), env.get("NODE_RANK", "0")
    if local.isdigit() and node.isdigit() and (int(local) or int(node)):
        return max(int(local), 1) * (1 + int(node))  # nonzero: only rank 0 matters here
    return 0


def is_writer() -> bool:
    """Only rank 0 of a multi-process (DDP) job writes files; the other ranks run the same
    loop (they must, to join every collective) but their writes are skipped."""
    return global_rank() == 0


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename it.

    If anything fails (disk full, I/O error, the process killed), ``path`` keeps its previous
    content; a temporary ``.NAME.XXXX.tmp`` is removed here, or by ``lth.run`` on the next start.
    Ranks other than 0 of a multi-process job write nothing (see :func:`is_writer`).
    """
    if not is_writer():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp's 0600 would make results unreadable to others
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_csv(path: Path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    if fieldnames is None:
        fieldnames = []
        for row in rows:
            fieldnames += [k for k in row if k not in fieldnames]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_tensors(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a tensor file saved by :func:`atomic_torch_save` (weights only)."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated, garbage, or not a tensor file
        raise CorruptFileError(f"{path} is corrupt or unreadable ({exc.__class__.__name__}: {exc}); delete it and "
                               f"re-run the same command to recompute it") from exc


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path} is corrupt ({exc})") from exc
