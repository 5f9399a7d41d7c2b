"""SIGTERM and SIGINT: save the round's state at once, say how to continue, exit non-zero.

Schedulers (SLURM, Kubernetes) send SIGTERM before pre-empting a job; Lightning's own handling
raises ``SIGTERMException``, a ``SystemExit`` with code 0, so a ``run && report`` chain would count a
pre-empted experiment as finished. Here a signal becomes :class:`Interrupted`:

- during training, :class:`SaveOnSignal` notes it, and at the end of the current group of steps
  writes the round's Lightning checkpoint (``last.ckpt``) and stops;
- anywhere else (between rounds, computing a mask) it is raised where the program stands: every
  file is written atomically, so nothing finished is lost.

``lth.run`` prints one line saying where it stopped and to re-run the same command, and exits with
``128 + signal`` (130 for SIGINT, 143 for SIGTERM), as a shell does for a killed command.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lth.signals import SIGNALS, Interrupted


class SaveOnSignal(pl.Callback):
    """During ``trainer.fit``: a signal is noted, then the round is checkpointed and stopped."""

    def __init__(self, checkpoint: Path, where: str):
        self.checkpoint = Path(checkpoint)
        self.where = where
        self.received: int | None = None
        self._previous: dict = {}

    def _note(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise Interrupted(signum, self.where)  # a second Ctrl-C: stop now (the last checkpoint stays)
        self.received = signum

    def on_train_start(self, trainer, pl_module):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in SIGNALS}

    def _restore(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.received is not None:
            self._save_and_stop(trainer, pl_module, self.received)

    def on_train_end(self, trainer, pl_module):
        self._restore()

    def on_exception(self, trainer, pl_module, exception):
        self._restore()
        if isinstance(exception, SIGTERMException):  # Lightning's handler saw it first
            self._save(trainer)

    def _save(self, trainer) -> None:
        trainer.save_checkpoint(str(self.checkpoint), weights_only=False)  # the whole state, to resume from

    def _save_and_stop(self, trainer, pl_module, signum: int):
        self._save(trainer)
        raise Interrupted(signum, f"{self.where} at iteration {pl_module.iteration} (state saved)")
