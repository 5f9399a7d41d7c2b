"""SIGTERM and SIGINT during training: save the round's state at once, say how to continue, exit non-zero.

Schedulers (SLURM, Kubernetes) send SIGTERM before pre-empting a job. ``lth.signals`` turns every
signal into :class:`~lth.signals.Interrupted`; during training steps :class:`SaveOnSignal` only
notes it, and at the end of the current group of steps writes the round's Lightning checkpoint
(``last.ckpt``) and stops. Lightning's own SIGTERM handling (it is composed with lth's while
``trainer.fit`` runs) raises ``SIGTERMException``, a ``SystemExit`` with code 0, so that a
``run && report`` chain would count a pre-empted experiment as finished: :func:`stop_cleanly`,
around every ``trainer.fit``, turns it into :class:`~lth.signals.Interrupted`.

``lth.run`` prints one line saying where it stopped and to re-run the same command, and exits with
``128 + signal`` (130 for SIGINT, 143 for SIGTERM), as a shell does for a killed command.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lth import signals
from lth.signals import Interrupted


class SaveOnSignal(pl.Callback):
    """During the training steps of ``trainer.fit``: a signal is noted, then the round is checkpointed and stopped."""

    def __init__(self, checkpoint: Path, where: str):
        self.checkpoint = Path(checkpoint)
        self.where = where
        self.saved_where = ""  # set when the state was saved on a signal

    def on_train_start(self, trainer, pl_module):
        signals.defer()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if signals.pending() is not None:
            self._save_and_stop(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if signals.undefer() is not None:  # arrived during the last group of steps
            self._save_and_stop(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception):
        signals.undefer()
        if isinstance(exception, SIGTERMException) and not self.saved_where:  # Lightning's handler stopped first
            self._save(trainer, pl_module)

    def _save(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(str(self.checkpoint), weights_only=False)  # the whole state, to resume from
        self.saved_where = f"{self.where} at iteration {pl_module.iteration} (state saved)"

    def _save_and_stop(self, trainer, pl_module):
        signals.undefer()
        self._save(trainer, pl_module)
        raise signals.interrupted(self.saved_where)


@contextlib.contextmanager
def stop_cleanly(where: str, saver: SaveOnSignal | None = None):
    """Around ``trainer.fit``: Lightning's ``SIGTERMException`` (exit code 0) becomes
    :class:`~lth.signals.Interrupted`, and a signal still noted when ``fit`` returns stops the run."""
    try:
        yield
    except SIGTERMException:
        raise Interrupted(signal.SIGTERM, (saver.saved_where if saver else "") or where) from None
    finally:
        signals.undefer()
    if signals.received() is not None:
        raise signals.interrupted(where)
