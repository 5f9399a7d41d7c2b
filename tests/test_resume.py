"""Re-running the same command continues an interrupted experiment and ends exactly as an uninterrupted one."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lth.lottery import ExperimentError, Lottery
from lth.training.module import LotteryModule
from lth.pruning import Mask
from tests.conftest import FAST, REPO, compose_config

# Groups of 5 optimizer steps per Lightning batch: interruptions at 25 and 35 fall on group boundaries.
SMALL = ["experiment=quickstart", *FAST, "train.iterations=40", "eval_every=10", "checkpoint_every=10",
         "prune.rounds=1", "controls=[]", "trainer.steps_per_call=5"]
TIMING = {"train_time_s", "time_s"}


class Interrupt(Exception):
    pass


class InterruptAt(pl.Callback):
    """Stops the process (as an exception) in ``branch_dir`` after iteration ``at``, once its checkpoint is written."""

    def __init__(self, branch_dir: str, at: int):
        self.branch_dir, self.at = branch_dir, at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if Path(trainer.default_root_dir).as_posix().endswith(self.branch_dir) and pl_module.iteration == self.at:
            raise Interrupt(f"interrupted at {self.at}")


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def masks(folder: Path) -> dict[str, dict]:
    return {p.relative_to(folder).as_posix(): Mask.load(p) for p in sorted(folder.rglob("*mask.pt"))}


def assert_same_experiment(a: Path, b: Path) -> None:
    assert read_csv(a / "results.csv") == read_csv(b / "results.csv")
    ma, mb = masks(a), masks(b)
    assert ma.keys() == mb.keys() and ma
    for k in ma:
        assert ma[k].keys() == mb[k].keys()
        assert all(torch.equal(ma[k][n], mb[k][n]) for n in ma[k]), k
    for curve in a.rglob("curve.csv"):
        assert read_csv(curve) == read_csv(b / curve.relative_to(a)), curve


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reference") / "exp"
    Lottery(compose_config(SMALL), folder).run()
    return folder


def interrupted_then_resumed(folder: Path, branch_dir: str, at: int, between=None) -> list[dict]:
    exp = Lottery(compose_config(SMALL), folder)
    exp.extra_callbacks.append(InterruptAt(branch_dir, at))
    with pytest.raises(Interrupt):
        exp.run()
    assert (folder / branch_dir / "checkpoints" / "last.ckpt").exists()
    assert not (folder / branch_dir / "row.json").exists()
    if between is not None:
        between(folder)
    return Lottery(compose_config(SMALL), folder).run()


def test_interrupted_round_continues_from_its_checkpoint_and_matches(tmp_path, reference):
    resumed_from = []

    class RecordStart(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            resumed_from.append((trainer.default_root_dir, pl_module.global_step))

    folder = tmp_path / "exp"
    exp = Lottery(compose_config(SMALL), folder)
    exp.extra_callbacks.append(InterruptAt("round_01/ticket", 25))
    with pytest.raises(Interrupt):
        exp.run()
    again = Lottery(compose_config(SMALL), folder)
    again.extra_callbacks.append(RecordStart())
    again.run()
    # finished rounds are skipped; round 1's ticket continues from its checkpoint at iteration 20
    assert [(Path(d).relative_to(folder).as_posix(), s) for d, s in resumed_from] == [
        ("round_01/ticket", 20)]
    assert_same_experiment(reference, folder)
    assert not list(folder.rglob("*.ckpt")) and not list(folder.rglob(".*.tmp"))


def test_corrupt_checkpoint_is_detected_and_the_round_redone(tmp_path, reference, caplog):
    def corrupt(folder):
        ckpt = folder / "round_01" / "ticket" / "checkpoints" / "last.ckpt"
        ckpt.write_bytes(ckpt.read_bytes()[: 1000])

    folder = tmp_path / "exp"
    with caplog.at_level("WARNING", logger="lth"):
        interrupted_then_resumed(folder, "round_01/ticket", 35, between=corrupt)
    assert "is corrupt" in caplog.text and "redoing that round" in caplog.text
    assert (folder / "round_01" / "ticket" / "checkpoints" / "last.corrupt").exists()
    assert_same_experiment(reference, folder)


def test_nan_loss_stops_the_round_and_is_recorded_as_diverged(tmp_path, monkeypatch):
    real_step = LotteryModule.training_step

    def nan_after_pruning(self, batch, batch_idx):
        if self.mask.weights_remaining() < 100:  # from iteration 12 the loss (then the weights) become NaN
            batch = [(x * float("nan") if self.iteration + j >= 12 else x, y) for j, (x, y) in enumerate(batch)]
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(LotteryModule, "training_step", nan_after_pruning)
    folder = tmp_path / "exp"
    with pytest.raises(ExperimentError, match="round 1 diverged.*lower optimizer.lr"):
        Lottery(compose_config(SMALL), folder).run()
    rows = read_csv(folder / "results.csv")
    assert [(r["round"], r["branch"], r["diverged"]) for r in rows] == [("0", "ticket", "False"), ("1", "ticket", "True")]
    assert "training loss became nan at iteration 20" in rows[1]["diverged_reason"]
    curve = read_csv(folder / "round_01" / "ticket" / "curve.csv")
    assert [int(p["iteration"]) for p in curve] == [0, 10]  # stopped at the first evaluation after the NaN


# ------------------------------------------------------------------ killed processes
KILL_SMALL = ["experiment=quickstart", *FAST, "train.iterations=40", "eval_every=10", "checkpoint_every=10",
              "prune.rounds=2", "controls=[]"]

# Runs lth.run; KILL_ON=<glob>, KILL_AT=<n>: SIGKILL itself right before the n-th rename onto a matching file,
# i.e. after its temporary file is written (killed while saving).
RUNNER = """
import fnmatch, os, signal, sys
import lth.storage
pattern, at = os.environ.get("KILL_ON"), int(os.environ.get("KILL_AT", "1"))
seen = [0]
real_replace = os.replace
def replace(src, dst, *a, **k):
    if pattern and fnmatch.fnmatch(str(dst), pattern):
        seen[0] += 1
        if seen[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *a, **k)
lth.storage.os.replace = replace
import lth.run
sys.argv = ["lth.run", *sys.argv[1:]]
lth.run.main()
"""


def start(folder: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUNNER, *KILL_SMALL, f"hydra.run.dir={folder}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def kill_when(proc: subprocess.Popen, ready, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before the kill point: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkilled_experiments_resume_to_the_same_results(tmp_path):
    ref = tmp_path / "ref"
    runs = {
        # killed at fixed points (a poll for a file raced with fast machines): while round 1 saves its
        # third checkpoint (the second is there to resume from), and as level 2's mask is being saved
        "mid_round": ({"KILL_ON": "*/round_01/ticket/checkpoints/last.ckpt", "KILL_AT": "3"}, None),
        "between_rounds": ({"KILL_ON": "*/round_02/mask.pt", "KILL_AT": "1"}, None),
        "while_saving": ({"KILL_ON": "*/round_01/ticket/checkpoints/last.ckpt", "KILL_AT": "2"}, None),
    }
    procs = {"ref": start(ref)}
    for name, (env, _) in runs.items():
        procs[name] = start(tmp_path / name, env)
    for name, (env, ready) in runs.items():
        if ready is not None:
            kill_when(procs[name], lambda: ready(tmp_path / name))
        else:
            assert procs[name].wait(timeout=400) == -signal.SIGKILL
        rows = read_csv(tmp_path / name / "results.csv") if (tmp_path / name / "results.csv").exists() else []
        assert all(r["round"] == "0" for r in rows) or name == "between_rounds"  # round 1 unfinished
    assert list((tmp_path / "while_saving").rglob(".last.ckpt.*.tmp")), "not killed while saving"
    for name in runs:  # the same command again
        procs[name] = start(tmp_path / name)
    for name, proc in procs.items():
        assert proc.wait(timeout=400) == 0, (name, proc.stderr.read()[-3000:])
    for name in runs:
        assert_same_experiment(ref, tmp_path / name)
        assert not list((tmp_path / name).rglob(".*.tmp")), name


def test_disk_full_while_saving_keeps_previous_state_and_rerun_finishes(tmp_path, reference, monkeypatch):
    import errno

    import lth.storage as storage

    real_replace = os.replace
    folder = tmp_path / "exp"

    def full(src, dst, *a, **k):
        if str(dst).endswith("round_01/ticket/row.json"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(storage.os, "replace", full)
    with pytest.raises(OSError, match="No space left"):
        Lottery(compose_config(SMALL), folder).run()
    monkeypatch.setattr(storage.os, "replace", real_replace)
    round0 = (folder / "round_00/ticket/row.json").read_bytes()
    assert not (folder / "round_01/ticket/row.json").exists() and not list(folder.rglob(".*.tmp"))
    Lottery(compose_config(SMALL), folder).run()
    assert (folder / "round_00/ticket/row.json").read_bytes() == round0
    assert_same_experiment(reference, folder)
