import math

import pytest

from lth.training.evaluation import DivergedError, early_stopping_index, summarize


def curve(val_losses):
    return [
        {"iteration": 100 * (i + 1), "val_loss": v, "val_acc": 0.5, "test_acc": 0.9 + i / 100, "test_loss": 0.0}
        for i, v in enumerate(val_losses)
    ]


def test_early_stopping_is_iteration_of_minimum_validation_loss():
    s = summarize(curve([1.0, 0.5, 0.3, 0.31, 0.4, 0.29001, 0.6]))
    assert s["es_iteration"] == 600
    assert s["test_acc_at_es"] == pytest.approx(0.95)
    assert s["min_val_loss"] == pytest.approx(0.29001)
    assert s["final_test_acc"] == pytest.approx(0.96)
    assert s["final_iteration"] == 700


def test_ties_pick_the_earliest_and_nan_never_wins():
    assert early_stopping_index([0.5, 0.2, 0.2, math.nan]) == 1
    assert early_stopping_index([math.nan, 0.9, math.inf]) == 1
    with pytest.raises(DivergedError):
        early_stopping_index([math.nan, math.inf])
