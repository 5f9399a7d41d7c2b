"""parallel_branches=N: a level's trainings in worker processes, with the same results as one after another."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lth.lottery import Lottery
from lth.lottery.parallel import parallel_workers, usable_cores
from lth.progress import ExperimentProgress
from tests.conftest import FAST, REPO, compose_config
from tests.test_resume import assert_same_experiment

SMALL = ["experiment=quickstart", *FAST, "train.iterations=100", "eval_every=20", "checkpoint_every=100",
         "prune.rounds=1", "controls=[reinit,random_prune]", "instability=true"]


def finals(folder: Path) -> dict[str, dict]:
    return {p.relative_to(folder).as_posix(): torch.load(p, weights_only=True) for p in sorted(folder.rglob("final.pt"))}


@pytest.mark.slow
def test_a_level_trained_in_workers_gives_the_sequential_results(tmp_path):
    one, two = tmp_path / "one" / "exp", tmp_path / "two" / "exp"  # apart: no shared dense round
    Lottery(compose_config([*SMALL, "parallel_branches=1"]), one).run()
    lot = Lottery(compose_config([*SMALL, "parallel_branches=2"]), two)
    lot.run()
    assert lot.pool.workers == 2
    assert_same_experiment(one, two)  # results.csv (but timings), curves, masks
    a, b = finals(one), finals(two)
    assert a.keys() == b.keys() and len(a) == 4  # ticket and instability copy at both levels
    assert all(torch.equal(a[k][n], b[k][n]) for k in a for n in a[k])
    copy = next(b.key for b in lot.branches if b.name == "instability")  # instability-<settings digest>
    assert (two / "round_01" / copy / "path.csv").read_text() == (one / "round_01" / copy / "path.csv").read_text()


def test_the_number_of_workers():
    cfg = compose_config([*SMALL, "train.iterations=5000"])
    assert parallel_workers(cfg) == max(1, usable_cores())  # auto: a core per worker, one torch thread each
    assert parallel_workers(compose_config([*SMALL, "train.iterations=5000", "trainer.torch_threads=2"])) == max(1, usable_cores() // 2)
    assert parallel_workers(compose_config(SMALL)) == 1  # auto, short trainings: not worth starting workers
    assert parallel_workers(compose_config([*SMALL, "parallel_branches=3"])) == 3
    assert parallel_workers(compose_config([*SMALL, "parallel_branches=3", "trainer.devices=2"])) == 1  # DDP


def test_the_progress_names_every_running_branch():
    now = [0.0]
    p = ExperimentProgress(6, levels=3, clock=lambda: now[0])
    p.training_started(1, "ticket", 80.0)
    p.training_started(1, "reinit", 80.0)
    now[0] = 10.0
    assert p.describe().startswith("level 1/2 ticket (80% of weights), level 1/2 reinit (80% of weights): training 2/6")
    p.training_finished(8.0, 1, "reinit")
    assert p.describe().startswith("level 1/2 ticket (80% of weights): training 2/6")
    p.training_finished(None, 1, "ticket")
    assert p.durations == [8.0, 10.0]


COMMAND = ["experiment=quickstart", "logger=none", "trainer=cpu", "trainer.enable_progress_bar=false",
           "train.iterations=4000", "eval_every=100", "checkpoint_every=500", "prune.rounds=1", "controls=[reinit]"]


def start(folder: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lth.run", *COMMAND, *extra, f"hydra.run.dir={folder}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_parent_saves_every_running_branch(tmp_path, signum):
    """The signal reaches the parent only (as from a scheduler): it is forwarded, every worker saves
    its round, one line, exit 128 + signal; the re-run ends as a sequential run."""
    ref = start(tmp_path / "ref" / "exp", "parallel_branches=1")
    folder = tmp_path / "interrupted" / "exp"
    proc = start(folder, "parallel_branches=2")
    deadline = time.monotonic() + 900
    ckpts = [folder / "round_01" / b / "checkpoints" / "last.ckpt" for b in ("ticket", "reinit")]
    while not all(c.exists() for c in ckpts):  # both branches of level 1 under way
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("interrupted:")] == [lines[-1]], err[-2000:]
    assert "Traceback" not in err and "re-run the same command" in lines[-1]
    for branch, ckpt in zip(("ticket", "reinit"), ckpts):
        at = int(re.search(rf"round 1 {branch} at iteration (\d+)", lines[-1]).group(1))
        assert torch.load(ckpt, weights_only=True)["global_step"] == at > 500  # saved at once
    again = start(folder, "parallel_branches=2")
    assert again.wait(timeout=900) == 0, again.stderr.read()[-2000:]
    assert ref.wait(timeout=900) == 0
    assert_same_experiment(tmp_path / "ref" / "exp", folder)


def test_evaluation_beside_training_only_where_a_core_is_free(monkeypatch):
    from lth.training.round import eval_beside_training

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    cfg = compose_config(SMALL)
    assert eval_beside_training(cfg, cpu, alone=True)
    assert not eval_beside_training(cfg, cpu, alone=False)  # in a worker: the other cores train branches
    assert not eval_beside_training(cfg, gpu, alone=True)
    assert not eval_beside_training(compose_config([*SMALL, "trainer.torch_threads=2"]), cpu, alone=True)
    assert eval_beside_training(compose_config([*SMALL, "eval_beside_training=true"]), cpu, alone=False)
    assert not eval_beside_training(compose_config([*SMALL, "eval_beside_training=false"]), cpu, alone=True)


def test_only_the_trainings_of_a_partial_last_wave_evaluate_beside_their_training():
    from lth.lottery.parallel import last_wave_beside

    assert last_wave_beside(3, 2) == [False, False, True]  # the third trains while a core would idle
    assert last_wave_beside(4, 2) == [False] * 4  # full waves: every core trains
    assert last_wave_beside(5, 4) == [False] * 4 + [True]
    assert last_wave_beside(6, 4) == [False] * 4 + [True, True]
    assert last_wave_beside(7, 4) == [False] * 7  # three left on four cores: no free core for each
