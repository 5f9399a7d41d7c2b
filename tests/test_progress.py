"""The progress display: ExperimentProgress's arithmetic and the bar in a real Lightning fit."""

from __future__ import annotations

import lth.progress

import pytorch_lightning as pl
import pytest
import torch

from lth.data.stream import BatchStream
from lth.models.lenet import LeNet
from lth.progress import ExperimentProgress, LotteryProgressBar, format_duration, latest_evaluation

try:  # the training modules moved into lth.training; either layout works
    from lth.training.evaluation import PeriodicEvaluation
    from lth.training.module import LotteryModule, OptimizerSettings
    from lth.training.schedule import LRSchedule
except ImportError:  # pragma: no cover
    from lth.evaluation import PeriodicEvaluation
    from lth.module import LotteryModule, OptimizerSettings
    from lth.schedule import LRSchedule


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_format_duration():
    assert [format_duration(s) for s in (0, 42.4, 60, 252, 3780, 2 * 86400 + 5 * 3600)] == \
        ["0s", "42s", "1m00s", "4m12s", "1h03m", "2d05h"]


def test_experiment_progress_estimates_time_left_from_trainings_done():
    clock = Clock()
    p = ExperimentProgress(trainings=5, levels=3, clock=clock)
    assert p.remaining_seconds() is None
    p.training_started(0, "ticket", 100.0)
    assert "training 1/5" in p.status() and "after the first training" in p.status()
    clock.now += 10
    p.training_finished()  # 10 s, timed by the clock
    p.training_started(1, "ticket", 80.0)
    clock.now += 4
    # 4 trainings left at 10 s each, the running one 4 s in
    assert p.remaining_seconds() == pytest.approx(36.0)
    assert p.describe() == "level 1/2 ticket (80% of weights): training 2/5, 14s so far, ~36s left"
    p.training_finished(20.0)  # explicit seconds: mean (10 + 20) / 2 = 15
    assert p.remaining_seconds() == pytest.approx(45.0)
    p.training_skipped()  # found complete on disk: done, not in the mean
    assert p.done == 3 and p.remaining_seconds() == pytest.approx(30.0)
    p.training_started(2, "reinit", 64.0)
    clock.now += 100  # slower than the estimate: never negative
    assert p.remaining_seconds() == 0.0
    p.training_finished()
    p.training_started(2, "ticket", 64.0)  # more than planned: counts on, no "6/5"
    assert "training 5/5" in p.status()
    p.training_finished()
    p.training_started(2, "extra", 64.0)
    assert "training 6/6" in p.status()


def test_latest_evaluation_duck_types_the_callback():
    class Eval:
        curve = [{"iteration": 10, "val_acc": 0.5, "test_acc": 0.4}, {"iteration": 20, "val_acc": 0.6, "test_acc": 0.7}]

    class T:
        callbacks = [object(), Eval()]

    assert latest_evaluation(T())["iteration"] == 20
    T.callbacks = [object()]
    assert latest_evaluation(T()) is None


class Recorder(pl.Callback):
    """Records what the bar drew after every Lightning batch."""

    def __init__(self, bar: LotteryProgressBar):
        self.bar = bar
        self.seen: list[tuple[int, str, str]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append((self.bar._drawn_at, self.bar.last_description, self.bar.last_postfix))


def _fit(tmp_path, start: int, end: int, progress: ExperimentProgress, capsys) -> tuple[LotteryProgressBar, Recorder, str]:
    torch.manual_seed(0)
    x, y = torch.randn(600, 1, 8, 8), torch.randint(0, 10, (600,))
    model = LeNet((1, 8, 8), 10, hidden=(16, 16))
    module = LotteryModule(model, None, OptimizerSettings("adam", lr=1e-3), LRSchedule(), start, end)
    evaluation = PeriodicEvaluation({"val": (x[:100], y[:100]), "test": (x[100:200], y[100:200])}, 20, end, 100)
    bar = LotteryProgressBar(progress, level=2, levels=4, branch="ticket", remaining=64.0, refresh_every=25)
    recorder = Recorder(bar)
    stream = BatchStream(x[200:], y[200:], 20, 0, end, position=lambda: module.iteration, length=end - start, group=5)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=end - start, max_epochs=-1, logger=False,
                         callbacks=[evaluation, bar, recorder], enable_checkpointing=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=str(tmp_path))
    capsys.readouterr()
    trainer.fit(module, train_dataloaders=stream)
    return bar, recorder, capsys.readouterr().out


def test_bar_in_a_real_fit_shows_level_branch_iterations_and_accuracy(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(lth.progress, "_is_terminal", lambda stream: True)  # capsys stands in for a terminal
    progress = ExperimentProgress(trainings=3, levels=4)
    bar, recorder, out = _fit(tmp_path, start=40, end=140, progress=progress, capsys=capsys)

    # absolute iterations: a round rewound to 40 runs 40..140, drawn every >= 25 iterations (groups of 5)
    drawn = sorted({it for it, _, _ in recorder.seen})
    assert drawn == [40, 65, 90, 115, 140]  # drawn at the start, then at most every 25 iterations, and at the end
    assert bar.start_iteration == 40 and bar.end_iteration == 140
    assert bar.last_description == "level 2/3 ticket 64% weights"
    # the latest evaluation (iteration 140) and where the experiment stands
    assert bar.last_postfix.startswith("val ") and " test " in bar.last_postfix
    during = [postfix for it, _, postfix in recorder.seen if it < 140]
    assert during and all("training 1/3" in p and "after the first training" in p for p in during)
    assert "training 1/3" in bar.last_postfix and "left" in bar.last_postfix  # drawn last, once the training ended
    assert progress.done == 1 and len(progress.durations) == 1

    # what reached the terminal: the same text, absolute iteration numbers, no "Epoch"
    assert "level 2/3 ticket 64% weights" in out and "it 140/140" in out and "Epoch" not in out
    assert "val " in out and "training 1/3" in out

    # a second training: now the time left is estimated
    bar2, _, out2 = _fit(tmp_path, start=0, end=50, progress=progress, capsys=capsys)
    assert "training 2/3" in bar2.last_postfix and "left" in bar2.last_postfix and "after the first" not in bar2.last_postfix
    assert "it 50/50" in out2


def test_bar_is_not_drawn_when_piped_but_still_counts_the_training(tmp_path, capsys):
    """capsys's stdout is not a terminal: nothing drawn (lth logs one line per training instead)."""
    progress = ExperimentProgress(trainings=2, levels=2)
    bar, _, out = _fit(tmp_path, start=0, end=50, progress=progress, capsys=capsys)
    assert out == "" and not bar.is_enabled
    assert progress.done == 1 and "training 1/2" in bar.last_postfix
