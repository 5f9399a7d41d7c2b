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
    assert "2 finished experiment(s) in 1 setting(s)" in report
    with open(sweep / "summary.csv") as f:
        assert {r["trials"] for r in csv.DictReader(f)} == {"2"}
    assert len(list((sweep / "figures").glob("*.png"))) == 2
    assert not list(sweep.glob("*/report.md"))  # no per-job report


def test_a_sweep_with_a_refused_job_is_refused_before_any_job_starts(tmp_path):
    """seed=1.5 cannot be composed (seed is an integer): the sweep is refused whole, naming that job, and
    nothing is written. (A job that fails while it runs does not stop the others: the callback test below.)"""
    env = dict(os.environ, WANDB_MODE="disabled")
    env.pop("LTH_SWEEP_NAME", None)
    cmd = [sys.executable, "-m", "lth.run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1.5",
           "experiment=quickstart", "train.iterations=20", "eval_every=10", "prune.rounds=1", "controls=[]",
           "logger=none", "trainer=cpu", "trainer.enable_progress_bar=false"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=560)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        "error: 1 of 2 jobs of the sweep are refused, so none is started: job 1 (seed=1.5): seed=1.5 must be an "
        "integer >= 0 and < 4294967296"]
    assert not any(tmp_path.iterdir())


def test_sweep_callback_records_failures_and_names_them(tmp_path):
    """The callback's side, in this process: a refused job, a crashed job and a finished one."""
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from lth.report import JobFailed, SweepCallback, take_sweep_outcome

    sweep = tmp_path / "sweep"
    callback = SweepCallback(report=True)

    def job(num: int, overrides: list[str], status: JobStatus, value) -> None:
        cfg = OmegaConf.create({"hydra": {"mode": "MULTIRUN", "job": {"num": num},
                                          "runtime": {"output_dir": str(sweep / f"job{num}")},
                                          "sweep": {"dir": str(sweep)}}})
        ret = JobReturn(overrides=overrides, status=status)
        ret._return_value = value
        callback.on_job_end(cfg, ret)

    master = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    (sweep / ".jobs").mkdir(parents=True)
    (sweep / ".jobs" / "7.json").write_text('{"num": 7, "status": "failed"}')  # left by an earlier run
    callback.on_multirun_start(master)
    job(0, ["seed=0", "x=1"], JobStatus.COMPLETED, None)
    job(1, ["seed=1", "x=1"], JobStatus.COMPLETED, JobFailed("seed=1 is wrong somehow", user_error=True))
    job(2, ["seed=2", "x=1"], JobStatus.FAILED, RuntimeError("boom"))
    callback.on_multirun_end(master)
    outcome = take_sweep_outcome()
    assert take_sweep_outcome() is None  # taken once
    assert outcome.jobs == 3 and [f["num"] for f in outcome.failed] == [1, 2]
    assert [f["user_error"] for f in outcome.failed] == [True, False]  # lth.run exits 1: not only user errors
    assert outcome.summary().startswith("2 of 3 sweep jobs failed (job 1 (seed=1); job 2 (seed=2))")
    text = (sweep / "report.md").read_text()  # written although no experiment finished
    assert "0 finished experiment(s)" in text and "seed=1 is wrong somehow" in text and "RuntimeError: boom" in text
