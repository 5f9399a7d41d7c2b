"""A progress display that says where the experiment stands.

One line per training, redrawn every ``refresh_every`` iterations (25: redrawing every step is a
measurable share of a small network's step, BENCHMARKS.md)::

    level 3/15 ticket 51.2% weights |████    | it 1200/3000 [00:03<00:05, 400it/s, val 97.1% test 97.0% | training 5/31, 4m12s so far, ~10m left]

- the level (of 0 = dense .. the last, as in lth's log lines), the branch and the % of weights remaining;
- iterations as absolute numbers: a round rewound to K runs K..end, a resumed one starts where it stopped;
- the latest validation and test accuracy, from the evaluation callback (any callback with a
  ``curve`` list of points with ``val_acc`` and ``test_acc``);
- the experiment: which training of how many, the time so far and the time left, estimated
  from the trainings done (``ExperimentProgress``, one per experiment, shared by the bars).

Plugging it in (one bar per Trainer, i.e. per training)::

    progress = ExperimentProgress(trainings=planned, levels=rounds + 1)
    ...
    bar = LotteryProgressBar(progress, level, rounds + 1, branch, mask.weights_remaining())
    pl.Trainer(callbacks=[..., bar])
    ...
    progress.training_skipped()   # for a training found complete on disk (resume)

The bar reports the training's start and end to ``progress`` itself. It is drawn only when
stdout is a terminal; piped, lth logs one line per finished training instead
(``lth.training.round``).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable

from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm


def format_duration(seconds: float) -> str:
    """``42s``, ``4m12s``, ``1h03m``, ``2d05h``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


class ExperimentProgress:
    """Where an experiment stands: trainings done of those planned, time so far, time left.

    The time left is the wall time per training finished in this process (from the start, so
    that what happens between trainings, building a Trainer, pruning, saving, is counted) times
    the trainings still to run, less the time since the last one ended. Trainings found complete
    on disk (``training_skipped``) count as done but not in that rate. ``durations`` keeps each
    training's own seconds.
    """

    def __init__(self, trainings: int, levels: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.trainings = max(int(trainings), 0)
        self.levels = levels
        self.clock = clock
        self.started_at = clock()
        self.durations: list[float] = []
        self.skipped = 0
        self.current: tuple[int, str, float] | None = None  # (level, branch, % remaining) of the one running
        self.current_since: float | None = None
        self.running: dict[tuple[int, str], tuple[float, float]] = {}  # (level, branch) -> (% remaining, since)
        self.timed_wall = 0.0  # wall time from rate_origin to the end of the last timed training
        self.rate_origin = self.started_at  # the start, moved on by the time spent on skipped trainings
        self.last_end = self.started_at

    @property
    def done(self) -> int:
        return len(self.durations) + self.skipped

    def training_started(self, level: int, branch: str, remaining_pct: float) -> None:
        self.current = (int(level), str(branch), float(remaining_pct))
        self.current_since = self.clock()
        self.running[self.current[:2]] = (self.current[2], self.current_since)

    def training_finished(self, seconds: float | None = None, level: int | None = None, branch: str | None = None) -> None:
        """A running training ended after ``seconds`` (default: since its ``training_started``): the
        one of ``level`` and ``branch`` (several run at once with ``parallel_branches``), else the last started."""
        key = (int(level), str(branch)) if branch is not None else (self.current[:2] if self.current else None)
        _, since = self.running.pop(key, (None, self.current_since))
        if seconds is None:
            seconds = self.clock() - since if since is not None else 0.0
        self.durations.append(max(float(seconds), 0.0))
        if key == (self.current[:2] if self.current else None):
            self.current_since = None
        self.last_end = self.clock()
        self.timed_wall = self.last_end - self.rate_origin

    def training_skipped(self) -> None:
        self.skipped += 1
        now = self.clock()
        self.rate_origin += now - self.last_end  # finding it complete is not a training's time
        self.last_end = now

    def elapsed(self) -> float:
        return self.clock() - self.started_at

    def remaining_seconds(self) -> float | None:
        """Estimated seconds until the last planned training ends; None before one has finished."""
        if not self.durations:
            return None
        per_training = max(self.timed_wall, sum(self.durations)) / len(self.durations)
        return max(per_training * max(self.trainings - self.done, 0) - (self.clock() - self.last_end), 0.0)

    def status(self) -> str:
        """``training 5/31, 4m12s so far, ~10m left`` (the bar's tail)."""
        number = self.done + max(len(self.running), 1 if self.current_since is not None else 0)
        total = max(self.trainings, number)
        left = self.remaining_seconds()
        eta = "time left known after the first training" if left is None else f"~{format_duration(left)} left"
        return f"training {number}/{total}, {format_duration(self.elapsed())} so far, {eta}"

    def describe(self) -> str:
        """One line: the level and branch running (if any), then ``status()``."""
        parts = []
        of = f"/{self.levels - 1}" if self.levels else ""  # levels count the dense level 0
        running = [(*key, r) for key, (r, _) in self.running.items()] or ([self.current] if self.current else [])
        if running:  # every branch running (several with parallel_branches)
            parts.append(", ".join(f"level {level}{of} {branch} ({remaining:.3g}% of weights)"
                                   for level, branch, remaining in running))
        parts.append(self.status())
        return ": ".join(parts)


def latest_evaluation(trainer) -> dict | None:
    """The last point of the evaluation callback's curve (duck typing: a ``curve`` list of dicts
    with ``val_acc`` and ``test_acc``), or None. Where the test split was skipped there (NaN,
    ``test_curve=false``), ``test_acc`` is the latest one measured."""
    for callback in getattr(trainer, "callbacks", []) or []:
        curve = getattr(callback, "curve", None)
        if isinstance(curve, list) and curve and isinstance(curve[-1], dict) and "test_acc" in curve[-1]:
            tested = next((p["test_acc"] for p in reversed(curve) if not math.isnan(float(p["test_acc"]))), math.nan)
            return {**curve[-1], "test_acc": tested}
    return None


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def _pct(value) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "?"
    return "nan" if math.isnan(v) else f"{100 * v:.1f}%"


class LotteryProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar for one training of a lottery experiment (see the module docstring).

    ``levels`` is the number of levels including the dense one (rounds + 1); the line shows the
    level as ``level/last``. ``last_description`` and ``last_postfix`` hold the text drawn last.
    """

    BAR_FORMAT = "{desc} |{bar:8}| it {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

    def __init__(self, progress: ExperimentProgress, level: int, levels: int, branch: str, remaining: float,
                 refresh_every: int = 25, process_position: int = 0):
        super().__init__(refresh_rate=1, process_position=process_position, leave=True)
        self.progress = progress
        self.level, self.levels, self.branch, self.remaining = int(level), int(levels), str(branch), float(remaining)
        self.refresh_every = max(int(refresh_every), 1)
        self.start_iteration = 0
        self.end_iteration = 0
        self.last_description = ""
        self.last_postfix = ""
        self._drawn_at = -1

    @property
    def is_enabled(self) -> bool:
        """Drawn on a terminal only: piped to a file (a cluster job's log), carriage-return redraws are
        noise, and lth's one line per finished training says what happened."""
        return super().is_enabled and _is_terminal(sys.stdout)

    # -------------------------------------------------------------- text
    def description(self) -> str:
        return f"level {self.level}/{max(self.levels - 1, self.level)} {self.branch} {self.remaining:.3g}% weights"

    def postfix(self, trainer) -> str:
        point = latest_evaluation(trainer)
        acc = f"val {_pct(point.get('val_acc'))} test {_pct(point.get('test_acc'))}" if point else "val - test -"
        return f"{acc} | {self.progress.status()}"  # tqdm puts ", " before it

    @staticmethod
    def _iteration(trainer, pl_module) -> int:
        it = getattr(pl_module, "iteration", None)
        return int(it) if it is not None else int(trainer.global_step)

    # -------------------------------------------------------------- Lightning hooks
    def init_train_tqdm(self) -> Tqdm:
        return Tqdm(
            desc=self.description(), total=self.end_iteration, initial=self.start_iteration,
            position=2 * self.process_position, disable=self.is_disabled, leave=self._leave,
            dynamic_ncols=True, file=sys.stdout, smoothing=0, bar_format=self.BAR_FORMAT,
        )

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_iteration = self._iteration(trainer, pl_module)  # after a resume: where it stopped
        self.end_iteration = int(getattr(pl_module, "end_iteration", 0) or
                                 (getattr(pl_module, "start_iteration", 0) + max(trainer.max_steps, 0)))
        self.progress.training_started(self.level, self.branch, self.remaining)
        self.train_progress_bar = self.init_train_tqdm()
        self._draw(trainer, self.start_iteration)

    def on_train_epoch_start(self, trainer, *_) -> None:
        pass  # one bar per training: Lightning's epochs (and its batch count) mean nothing here

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        it = self._iteration(trainer, pl_module)
        if it - self._drawn_at >= self.refresh_every or it >= self.end_iteration:
            self._draw(trainer, it)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._draw(trainer, self._iteration(trainer, pl_module))

    def on_train_end(self, trainer, pl_module) -> None:
        self.progress.training_finished()  # timed by the progress's clock since on_train_start
        self._draw(trainer, self._iteration(trainer, pl_module))
        self.train_progress_bar.close()

    def _draw(self, trainer, iteration: int) -> None:
        self._drawn_at = iteration
        self.last_description = self.description()
        self.last_postfix = self.postfix(trainer)
        bar = self._train_progress_bar
        if bar is None or bar.disable:
            return
        bar.n = iteration
        bar.set_postfix_str(self.last_postfix, refresh=False)
        bar.refresh()
