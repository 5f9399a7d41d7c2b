"""trainer=ddp: two CPU processes (gloo) run one experiment; the mask is identical on both ranks,
only rank 0 writes, and the results match a single-process run (each rank takes half a batch)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from lth.lottery import Lottery
from tests.conftest import FAST, compose_config

OVERRIDES = ["experiment=quickstart", "train.iterations=20", "eval_every=10", "prune.rounds=2",
             "controls=[random_prune]"]


@pytest.mark.slow
def test_ddp_two_cpu_processes_identical_masks(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "LTH_SWEEP_NAME"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "lth.run", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "logger=none",
           "trainer.enable_progress_bar=false", *OVERRIDES]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=560)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in (tmp_path / "outputs" / "runs").iterdir() if not p.name.startswith(".")]  # not .dense
    assert len(runs) == 1
    out = runs[0]
    logs = (out / "run.log").read_text() + (out / "train_ddp_process_1.log").read_text()
    # sync_mask raises unless the all-gathered checksums agree: rounds 1 and 2, ticket and random_prune masks,
    # on both ranks (two processes: the all-gather counted 2).
    assert logs.count("mask identical on all 2 ranks") == 8
    with open(out / "results.csv") as f:
        ddp_rows = list(csv.DictReader(f))
    assert [(r["round"], r["branch"]) for r in ddp_rows] == [("0", "ticket"), ("1", "ticket"), ("1", "random_prune"),
                                                              ("2", "ticket"), ("2", "random_prune")]
    assert not list(out.rglob(".*.tmp"))

    # The same experiment in one process: the global batch is split across ranks and the
    # gradients are all-reduced at every optimizer step (also within a group of steps per
    # Lightning batch), so the numbers agree up to float rounding of the all-reduce.
    single = Lottery(compose_config([*OVERRIDES, *FAST]), tmp_path / "single").run()
    for a, b in zip(ddp_rows, single):
        assert float(a["weights_remaining"]) == pytest.approx(b["weights_remaining"])
        assert float(a["min_val_loss"]) == pytest.approx(b["min_val_loss"], rel=1e-4)
        assert float(a["test_acc_at_es"]) == pytest.approx(b["test_acc_at_es"], abs=1e-9)
