"""test_curve=false evaluates the test split only where the results read it; every result is the same."""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lth.lottery import Lottery
from lth.training.evaluation import PeriodicEvaluation, evaluate, summarize
from tests.conftest import FAST, compose_config

TIMING = {"train_time_s", "time_s"}
SMALL = ["experiment=quickstart", *FAST, "train.iterations=60", "eval_every=5", "checkpoint_every=60",
         "prune.rounds=1", "controls=[reinit]", "trainer.steps_per_call=5"]


def read(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def test_results_are_identical_with_and_without_the_test_curve_and_the_evaluation_thread(tmp_path):
    full, lean = tmp_path / "full" / "exp", tmp_path / "lean" / "exp"  # apart: no shared dense round
    Lottery(compose_config([*SMALL, "test_curve=true", "eval_beside_training=false"]), full).run()
    Lottery(compose_config([*SMALL, "test_curve=false", "eval_beside_training=false"]), lean).run()
    beside = tmp_path / "beside" / "exp"
    Lottery(compose_config([*SMALL, "test_curve=false", "eval_beside_training=true"]), beside).run()
    assert read(full / "results.csv") == read(lean / "results.csv") == read(beside / "results.csv")
    for path in sorted(lean.rglob("curve.csv")):
        assert read(path) == read(beside / path.relative_to(lean)), path
    skipped = 0
    for path in sorted(full.rglob("curve.csv")):
        a, b = read(path), read(lean / path.relative_to(full))
        assert [{k: v for k, v in p.items() if not k.startswith("test_")} for p in a] == \
               [{k: v for k, v in p.items() if not k.startswith("test_")} for p in b]
        best = math.inf
        for i, (p, q) in enumerate(zip(a, b)):
            val = float(p["val_loss"])
            # independent of the callback: the test split is read at a new minimum and at the end
            needed = val < best or i == len(a) - 1
            best = min(best, val)
            if needed:
                assert (q["test_loss"], q["test_acc"]) == (p["test_loss"], p["test_acc"]), (path, i)
            else:
                assert q["test_acc"] == "nan" and q["test_loss"] == "nan", (path, i)
                skipped += 1
    assert skipped > 0  # the setting did skip evaluations


class Fake:
    """The parts of a Trainer and LotteryModule the callback reads."""

    def __init__(self, model):
        self.trainer = SimpleNamespace(optimizers=[SimpleNamespace(param_groups=[{"lr": 0.1}])], should_stop=False)
        self.module = SimpleNamespace(model=model, iteration=0, last_loss=None)


def drive(test_curve: bool, weights: list[torch.Tensor], state=None, diverge=True, background=False) -> PeriodicEvaluation:
    """Evaluation points at iterations 0, 10, 20, ... with the model's weight set to ``weights[i]``,
    then a NaN training loss at the next one (``diverge``; else the last point is the round's end);
    ``state``: resume from a saved callback state after the second-to-last point."""
    end = 1000 if diverge else 10 * (len(weights) - 1)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    gen = torch.Generator().manual_seed(1)
    splits = {s: (torch.randn(200, 4, generator=gen), torch.randint(0, 3, (200,), generator=gen)) for s in ("val", "test")}
    ev = PeriodicEvaluation(splits, 10, end, 64, test_curve=test_curve, background=background)
    fake = Fake(model)
    for i, w in enumerate(weights):
        with torch.no_grad():
            model.weight.copy_(w)
        fake.module.iteration, fake.module.last_loss = 10 * i, torch.tensor(1.0)
        if i == 0:
            ev.on_train_start(fake.trainer, fake.module)
        else:
            ev.on_train_batch_end(fake.trainer, fake.module, None, None, 0)
        if state is not None and i == len(weights) - 2:  # a resume: a fresh callback from the saved state
            saved = ev.state_dict()
            ev = PeriodicEvaluation(splits, 10, end, 64, test_curve=test_curve, background=background)
            ev.load_state_dict(saved)
    if not diverge:
        ev.on_train_end(fake.trainer, fake.module)
        return ev
    with torch.no_grad():
        model.weight.fill_(float("nan"))  # diverged weights at the next evaluation
    fake.module.iteration, fake.module.last_loss = 10 * len(weights), torch.tensor(float("nan"))
    ev.on_train_batch_end(fake.trainer, fake.module, None, None, 0)
    assert fake.trainer.should_stop and "training loss became nan" in ev.diverged
    return ev


@pytest.mark.parametrize("diverge", [True, False])
def test_the_last_point_has_its_test_accuracy_when_it_is_not_a_new_minimum(diverge):
    """At the round's end, and where the training loss diverges after an untested point (the round
    stops there: that point's kept weights are tested)."""
    gen = torch.Generator().manual_seed(2)
    good = torch.randn(3, 4, generator=gen)
    weights = [torch.zeros(3, 4), good, good * 0.3 + torch.randn(3, 4, generator=gen)]  # the last is worse
    for resumed, background in ((None, False), (True, False), (None, True), (True, True)):
        full = drive(True, weights, resumed, diverge)
        lean = drive(False, weights, resumed, diverge, background)
        assert math.isfinite(full.curve[-1]["val_loss"]) and lean.curve[-1]["val_loss"] > min(
            p["val_loss"] for p in lean.curve)  # the last point is not a new minimum...
        assert summarize(lean.curve) == summarize(full.curve)  # ...yet its (final) test accuracy was measured
        model = nn.Linear(4, 3)
        with torch.no_grad():
            model.weight.copy_(weights[-1])
        torch.manual_seed(0)
        bias = nn.Linear(4, 3).bias
        with torch.no_grad():
            model.bias.copy_(bias)
        splits_test = lean.splits["test"]
        assert lean.curve[-1]["test_acc"] == evaluate(model, *splits_test, 64)[1]


def test_learning_curves_draw_validation_when_the_test_curve_is_partial(tmp_path):
    from lth.figures import plot_learning_curves
    from lth.report.settings import mean_curve

    full = [{"iteration": i, "val_acc": 0.5 + i / 100, "test_acc": 0.4 + i / 100} for i in range(0, 30, 10)]
    lean = [{**p, "test_acc": p["test_acc"] if i == 0 else math.nan} for i, p in enumerate(full)]
    assert plot_learning_curves({"100%": full}, tmp_path / "a.png").axes[0].get_ylabel() == "test accuracy (%)"
    ax = plot_learning_curves({"100%": lean}, tmp_path / "b.png").axes[0]
    assert ax.get_ylabel() == "validation accuracy (%)"
    assert list(ax.lines[0].get_ydata()) == [100 * p["val_acc"] for p in lean]
    for name, curve in (("full", full), ("lean", lean)):  # the sweep report's mean curves
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(curve[0]))
            writer.writeheader()
            writer.writerows(curve)
    assert "test_acc" in mean_curve([tmp_path / "full.csv"])[0]
    assert mean_curve([tmp_path / "lean.csv"])[1]["val_acc"] == full[1]["val_acc"]
