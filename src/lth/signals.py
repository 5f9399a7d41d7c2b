"""SIGINT and SIGTERM as an exception, :class:`Interrupted` (no heavy imports: ``lth.run`` installs
it first). During training ``lth.training.interrupt.SaveOnSignal`` takes over to save the round."""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    def __init__(self, signum: int, where: str = ""):
        self.signum = signum
        self.where = where
        super().__init__(f"{signal.Signals(signum).name}{' ' + where if where else ''}")

    def __reduce__(self):  # raised in a worker process (parallel_branches), re-raised in the parent
        return Interrupted, (self.signum, self.where)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum, frame):
    raise Interrupted(signum)


def install_process_handlers() -> None:
    """Outside training, SIGINT and SIGTERM raise :class:`Interrupted` (no traceback, non-zero exit)."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _raise)
