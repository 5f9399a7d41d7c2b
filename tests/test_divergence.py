"""A finite but exploding validation loss (above ``divergence_factor`` x its start) is a divergence."""

from __future__ import annotations

import csv

import pytest

from lth.lottery import ExperimentError, Lottery
from tests.conftest import FAST, compose_config

HUGE_LR = ["experiment=quickstart", *FAST, "prune.rounds=1", "controls=[]", "train.iterations=40", "eval_every=10",
           "optimizer.lr=1e6"]


def _csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_exploding_validation_loss_is_flagged_diverged_and_stops_early(tmp_path, caplog):
    folder = tmp_path / "exp"
    with pytest.raises(ExperimentError, match="dense round diverged.*divergence_factor"):
        Lottery(compose_config(HUGE_LR), folder).run()
    row = _csv(folder / "results.csv")[0]
    assert row["diverged"] == "True" and "1000x its start" in row["diverged_reason"]
    curve = [float(p["val_loss"]) for p in _csv(folder / "round_00" / "ticket" / "curve.csv")]
    # stopped at the first evaluation above 1000x the start, every one before it below (an independent check)
    assert curve[-1] > 1000 * curve[0] and all(v <= 1000 * curve[0] for v in curve[:-1])
    assert len(curve) < 5  # evaluations at 0, 10, 20, 30, 40 without the stop
    said = [r.getMessage() for r in caplog.records if "diverged" in r.getMessage() and r.name == "lth"]
    assert len(said) == 1 and "level 0/1 ticket" in said[0], said  # one line


def test_divergence_factor_zero_turns_the_check_off(tmp_path):
    rows = Lottery(compose_config([*HUGE_LR, "divergence_factor=0"]), tmp_path / "exp").run()
    assert not any(r["diverged"] for r in rows)  # finite losses: trained to the end, a "normal" result
    assert rows[0]["final_iteration"] == 40 and rows[0]["final_val_loss"] > 1000 * 2.0
