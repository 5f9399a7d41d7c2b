"""SIGTERM (a scheduler's pre-emption) and SIGINT (Ctrl-C) during training: the round's state is
saved at once, one line says how to continue, the exit status is 128 + the signal, and re-running
the same command ends identical to an uninterrupted run."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.test_resume import assert_same_experiment

COMMAND = ["experiment=quickstart", "logger=none", "trainer=cpu", "trainer.enable_progress_bar=false",
           "train.iterations=4000", "eval_every=100", "checkpoint_every=500", "prune.rounds=1", "controls=[]"]


def start(folder: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lth.run", *COMMAND, f"hydra.run.dir={folder}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def signal_mid_training(proc: subprocess.Popen, folder: Path, signum: int) -> str:
    deadline = time.monotonic() + 900
    while not (folder / "round_01" / "ticket" / "checkpoints" / "last.ckpt").exists():  # round 1 is under way
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return err


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_round_exits_non_zero_and_the_rerun_matches(tmp_path, signum):
    ref = start(tmp_path / "ref" / "exp")
    folder = tmp_path / "interrupted" / "exp"
    proc = start(folder)
    err = signal_mid_training(proc, folder, signum)
    assert proc.returncode == 128 + signum  # 143 for SIGTERM, 130 for SIGINT: never 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("interrupted:")] == [lines[-1]], err[-2000:]
    assert "Traceback" not in err and "round 1 ticket at iteration" in lines[-1] and "re-run the same command" in lines[-1]
    at = int(re.search(r"at iteration (\d+)", lines[-1]).group(1))
    ckpt = torch.load(folder / "round_01" / "ticket" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == at > 500  # saved at once, not only at the last periodic checkpoint
    assert not (folder / "round_01" / "ticket" / "row.json").exists()
    again = start(folder)
    assert again.wait(timeout=900) == 0, again.stderr.read()[-2000:]
    assert ref.wait(timeout=900) == 0
    assert_same_experiment(tmp_path / "ref" / "exp", folder)


def test_the_exit_status_of_an_interrupt_is_128_plus_the_signal():
    from lth.signals import Interrupted

    assert Interrupted(signal.SIGTERM).exit_code == 143 and Interrupted(signal.SIGINT).exit_code == 130
