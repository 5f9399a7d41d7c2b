"""The dense round (level 0), trained once and shared by the experiments that only differ in how
they prune or where they rewind.

Its training lives in ``<parent>/.dense/<dense hash>/`` (``lth.identity.dense_hash``: the identity
without the pruning settings and the rewind point), beside the experiment folders of a sweep or of
``outputs/runs``. A rewind sweep ``rewind_iteration=0,100,500,2000 -m`` trains the dense network
once; each later K replays only the first K iterations from θ0 (same data order, same optimizer:
the same θK as a capture during the dense training) to get θK. The experiment keeps its own copy
(``round_00/ticket``, ``theta_k.pt``; final weights hard-linked where the disk allows), so it stays
complete if the shared folder is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from lth.distributed import barrier
from lth.identity import dense_hash
from lth.storage import atomic_write_bytes, is_writer
from lth.lottery.stacking import train_one
from lth.training.round import Training

FILES = ("curve.csv", "final.pt", "row.json")  # row.json last: the copy's completion marker


def dense_round(lot) -> dict:
    """Level 0's row; trains, replays to θK or only copies, as the disk requires."""
    own, k = lot.layout.branch(0, "ticket"), lot.rewind
    need_theta_k = k > 0 and not lot.layout.theta_k.exists()
    row = lot.trainer.finished(own, keep_final=True)
    if row is not None and not need_theta_k:
        lot.progress.training_skipped()
        return row
    store = lot.layout.dense_store(dense_hash(lot.cfg))
    theta_k = store / f"theta_{k:07d}.pt"

    def training() -> Training:
        return Training(0, "ticket", store, lot.ticket_mask(0), lot.model_at(lot.theta0), 0, lot.seed, keep_final=True,
                        capture_at=k or None, capture_path=theta_k)

    with locked(store):
        row = train_one(lot, training())  # stacked alone (a CUDA graph) where stack_networks allows
        if k and not row["diverged"] and not theta_k.exists():
            lot.trainer.replay(training(), until=k)
        for src in [theta_k] * bool(k) + [store / name for name in FILES]:
            if src.exists():
                lot.layout.read(src)  # written by another job maybe: checked before it is copied
        if k:
            _publish(theta_k, lot.layout.theta_k)
        for name in FILES:
            _publish(store / name, own / name)
    barrier()  # DDP: the copies exist for every rank
    return row


def _publish(src: Path, dst: Path) -> None:
    """``dst`` becomes a copy of ``src`` (a hard link where possible), atomically."""
    if not src.exists() or not is_writer():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    try:
        tmp.unlink(missing_ok=True)
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_write_bytes(dst, src.read_bytes())


def dense_to_train(lot) -> Training | None:
    """The dense round's training when neither the experiment nor its shared store holds it yet, for a
    stack across experiments (``lth.lottery.seeds``; the caller holds :func:`locked` on the store). It
    captures no θK: :func:`dense_round` then replays the first K iterations, the same θK."""
    store = lot.layout.dense_store(dense_hash(lot.cfg))
    if lot.trainer.finished(lot.layout.branch(0, "ticket"), True) or lot.trainer.finished(store, True):
        return None
    return Training(0, "ticket", store, lot.ticket_mask(0), lot.model_at(lot.theta0), 0, lot.seed, keep_final=True)


@contextlib.contextmanager
def locked(store: Path):
    """One process at a time trains a shared dense round (parallel sweep jobs wait for it)."""
    if not is_writer():  # DDP ranks > 0 follow rank 0 into the same training
        yield
        return
    store.mkdir(parents=True, exist_ok=True)
    with open(store / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
