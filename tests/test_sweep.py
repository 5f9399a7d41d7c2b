"""Hydra multirun: every job in its own folder under one sweep folder, one report at its root."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_joblib_seed_sweep_runs_both_jobs_and_reports(tmp_path):
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("LTH_SWEEP_NAME", None)
    cmd = [sys.executable, "-m", "lth.run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1",
           "experiment=quickstart", "train.iterations=20", "eval_every=10", "prune.rounds=1", "controls=[]",
           "logger=none", "trainer=cpu", "trainer.enable_progress_bar=false"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=560)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = list((tmp_path / "outputs" / "multirun").iterdir())
    assert len(sweeps) == 1, sweeps  # one sweep folder for both jobs
    sweep = sweeps[0]
    assert "seed=0,1" in sweep.name
    jobs = sorted(p.parent for p in sweep.rglob("results.csv"))
    assert len(jobs) == 2 and all(j.parent == sweep for j in jobs)
    assert sorted("seed=0" in j.name for j in jobs) == [False, True]
    for j in jobs:
        with open(j / "results.csv") as f:
            assert [r["round"] for r in csv.DictReader(f)] == ["0", "1"]
    # One summary at the sweep root, aggregating the two seeds as trials.
    assert (sweep / "multirun.yaml").exists()
    report = (sweep / "report.md").read_text()
    assert "2 experiment(s) in 1 setting(s)" in report
    with open(sweep / "summary.csv") as f:
        assert {r["trials"] for r in csv.DictReader(f)} == {"2"}
    assert len(list((sweep / "figures").glob("*.png"))) == 2
    assert not list(sweep.glob("*/report.md"))  # no per-job report
