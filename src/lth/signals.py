"""SIGINT and SIGTERM, whenever they arrive: one handler for the whole run, one exception nothing
can swallow, and a noted signal never forgotten (no heavy imports: ``lth.run`` installs it first).

- Before ``lth.run.main`` starts (while the program loads) a signal prints the ``interrupted:`` line
  and exits at once: nothing was started.
- Then a signal raises :class:`Interrupted` where the program stands (every file is written
  atomically, so nothing finished is lost). It is a ``BaseException``: the ``except Exception``
  of a library (Hydra, Lightning, W&B) or of lth cannot turn it into an error or a success.
- During training steps (``lth.training.interrupt.SaveOnSignal``) a signal is only noted
  (:func:`defer`); at the end of the current group of steps the round's checkpoint is written and
  :class:`Interrupted` raised. A second Ctrl-C stops at once.
- Once :class:`Interrupted` is on its way, a further SIGTERM is ignored (the run is stopping) and a
  further SIGINT raises again; once ``lth.run`` has printed its line (:func:`reported`), both are ignored.
- :func:`received` says whether a signal arrived that was not reported yet: ``lth.run`` checks it
  before exiting, so a signal whose exception was lost anyway (raised inside a ``__del__``, or
  Lightning's ``SIGTERMException``, a ``SystemExit`` with code 0) still ends the run with 128 + signal.

``lth.run`` exits with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM), as a shell does.
"""

from __future__ import annotations

import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A SIGINT or SIGTERM; ``where`` says where the run stopped."""

    def __init__(self, signum: int, where: str = ""):
        self.signum = signum
        self.where = where
        super().__init__(f"{signal.Signals(signum).name}{' ' + where if where else ''}")

    def __reduce__(self):  # raised in a worker process (parallel_branches), re-raised in the parent
        return Interrupted, (self.signum, self.where)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    starting = False  # lth.run is still loading: exit at once
    deferring = False  # in training steps: note the signal, SaveOnSignal stops at the next group boundary
    pending: int | None = None  # the first signal received (raised or noted), until reported
    raised = False  # an Interrupted is on its way up
    done = False  # lth.run printed its interrupted: line: ignore further signals
    previous: dict | None = None  # handlers replaced by defer() outside lth.run (library use)


_state = _State()


def _handle(signum, frame):
    s = _state
    if s.done:
        return
    if s.starting:
        s.done = True
        print(f"interrupted: {signal.Signals(signum).name} while starting; nothing was run: re-run the same command.",
              file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)
    if s.pending is None:
        s.pending = signum
        if s.deferring:
            return
    elif signum != signal.SIGINT or not (s.raised or s.deferring):
        return  # already stopping; only Ctrl-C again means "now"
    s.raised = True
    raise Interrupted(s.pending if s.pending is not None else signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install_process_handlers(starting: bool = False) -> None:
    """SIGINT and SIGTERM raise :class:`Interrupted` from now on (``starting``: exit at once, while
    the program loads); a fresh state."""
    global _state
    _state = _State()
    _state.starting = starting
    if _main_thread():
        for s in SIGNALS:
            signal.signal(s, _handle)


def installed() -> bool:
    return all(signal.getsignal(s) is _handle for s in SIGNALS)


def defer() -> None:
    """From now on a signal is only noted (see :func:`pending`); installs the handler if this process
    has none of lth's (library use), until :func:`undefer`."""
    if _main_thread() and not installed():
        previous = {s: signal.getsignal(s) for s in SIGNALS}
        install_process_handlers()
        _state.previous = previous
    _state.deferring = True


def pending() -> int | None:
    """The signal noted while deferring, if any."""
    return _state.pending if _state.deferring else None


def undefer() -> int | None:
    """Back to raising at once; returns the signal noted meanwhile, if any (the caller stops for it)."""
    s = _state
    s.deferring = False
    if s.previous is not None and _main_thread():
        for sig, handler in s.previous.items():
            signal.signal(sig, handler)
        s.previous = None
    return s.pending if not s.raised else None


def received() -> int | None:
    """A signal that arrived and was not reported by :func:`reported` yet."""
    return None if _state.done or not installed() else _state.pending


def reported() -> None:
    """The interrupted: line is printed: further signals are ignored while the process exits."""
    _state.done = True


def interrupted(where: str = "") -> Interrupted:
    """The :class:`Interrupted` to raise for the signal noted while deferring."""
    _state.raised = True
    return Interrupted(_state.pending, where)
