"""SIGTERM (a scheduler's pre-emption) and SIGINT (Ctrl-C), whenever they arrive: one line says how
to continue, the exit status is 128 + the signal, finished work is kept; during training the
round's state is saved at once, and re-running the same command ends identical to an uninterrupted run.

The moments are reached deterministically: the process signals itself from a hook at that moment."""

from __future__ import annotations

import json
import os
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


# ------------------------------------------------------------------ every moment, deterministically
TINY = ["experiment=quickstart", "logger=none", "trainer=cpu", "trainer.enable_progress_bar=false",
        "train.iterations=20", "eval_every=10", "prune.rounds=1", "controls=[]"]

# Runs lth.run as `lth-run` would; AT=<moment>: the process sends itself SIGNUM there.
RUNNER = """
import os, signal, sys
at, signum = os.environ["AT"], int(os.environ["SIGNUM"])
def send():
    os.kill(os.getpid(), signum)
class WhileLoading:  # the signal arrives while lth.run imports Hydra
    def find_spec(self, name, path=None, target=None):
        if name == "hydra" and at == "loading":
            sys.meta_path.remove(self)
            send()
sys.meta_path.insert(0, WhileLoading())
sys.argv[0] = "lth-run"
import lth.run
import pytorch_lightning as pl
from pytorch_lightning.trainer.connectors.signal_connector import _SignalConnector
from lth.lottery import plan, outputs
from lth.pruning import rule

class Hook(pl.Callback):
    def setup(self, trainer, pl_module, stage):
        if at == "trainer_setup":
            send()
    def on_fit_start(self, trainer, pl_module):
        if at == "swallowed_before_lightning_handler":  # a library's except Exception around the moment
            try:
                send()
            except Exception:
                pass

import lth.quiet
real_quiet = lth.quiet.quiet
def quiet():  # the first thing a job does, before torch is loaded
    if at == "job_start":
        send()
    real_quiet()
lth.quiet.quiet = quiet

real_init = plan.Lottery.__init__
def init(self, *a, **k):
    real_init(self, *a, **k)
    self.extra_callbacks.append(Hook())
plan.Lottery.__init__ = init

real_register = _SignalConnector.register_signal_handlers
def register(self):  # the window from Lightning's SIGTERM handler to lth's training
    real_register(self)
    if at == "lightning_handler":
        send()
    if at == "swallowed_under_lightning_handler":
        try:
            send()
        except Exception:
            pass
_SignalConnector.register_signal_handlers = register

real_check = plan.Lottery.check_search_alive
def check(self, level, rows):
    real_check(self, level, rows)
    if at == "between_levels" and level == 0:
        send()
plan.Lottery.check_search_alive = check

real_mask_at = rule.PruningRule.mask_at
def mask_at(self, *a, **k):
    if at == "mask":
        send()
    return real_mask_at(self, *a, **k)
rule.PruningRule.mask_at = mask_at

real_plot = outputs.plot_sparsity_figure
def plot(*a, **k):
    if at == "figures":
        send()
    return real_plot(*a, **k)
outputs.plot_sparsity_figure = plot
lth.run.main()
"""

MOMENTS = ["loading", "job_start", "trainer_setup", "swallowed_before_lightning_handler", "lightning_handler",
           "swallowed_under_lightning_handler", "between_levels", "mask", "figures"]


def run_signalled(folder: Path, at: str, signum: int, extra: list[str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUNNER, *TINY, *(extra or []), f"hydra.run.dir={folder}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "AT": at, "SIGNUM": str(int(signum)), "WANDB_MODE": "offline",
                                 "WANDB_SILENT": "true"})


def assert_interrupted(proc: subprocess.Popen, signum: int) -> str:
    out, err = proc.communicate(timeout=600)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 128 + signum, (proc.returncode, err[-3000:])
    assert "Traceback" not in out + err, err[-3000:]
    assert [line for line in lines if line.startswith("interrupted:")] == [lines[-1]], err[-3000:]
    assert "re-run the same command" in lines[-1] and not any("Received SIGTERM" in line for line in lines)
    return lines[-1]


@pytest.mark.slow
def test_a_signal_at_any_moment_exits_with_128_plus_it_and_keeps_finished_work(tmp_path):
    """Every moment at once (SIGTERM; SIGINT at two), as parallel processes."""
    cases = {(at, signal.SIGTERM) for at in MOMENTS} | {("lightning_handler", signal.SIGINT), ("mask", signal.SIGINT)}
    procs = {(at, s): run_signalled(tmp_path / f"{at}-{s}" / "exp", at, s) for at, s in sorted(cases)}
    for (at, s), proc in procs.items():
        line = assert_interrupted(proc, s)
        assert line.startswith(f"interrupted: {signal.Signals(s).name}"), (at, line)
        folder = tmp_path / f"{at}-{s}" / "exp"
        if at == "loading":
            assert "while starting" in line and not folder.exists()
        if at == "job_start":  # the folder Hydra made for the job is not left behind
            assert "before the experiment started; nothing was written" in line and not folder.exists(), line
        if at in ("between_levels", "mask", "figures"):  # the dense round is finished and kept
            assert json.loads((folder / "round_00" / "ticket" / "row.json").read_text())["round"] == 0
            assert (folder / "results.csv").exists()
        if at in ("between_levels", "mask"):  # a signal does not wait for the figures: the next run draws them
            assert not (folder / "lottery_ticket.png").exists(), at
        if at == "figures":  # every round is finished and kept
            assert (folder / "round_01" / "ticket" / "row.json").exists()
        assert not list(folder.rglob(".*.tmp")), at


@pytest.mark.slow
def test_a_signal_while_the_trainer_starts_with_wandb_offline(tmp_path):
    """The issue's case: the default logger (W&B, offline), a signal while Lightning's Trainer starts."""
    procs = {at: run_signalled(tmp_path / at / "exp", at, signal.SIGTERM, ["logger=wandb"])
             for at in ("trainer_setup", "swallowed_under_lightning_handler")}
    for proc in procs.values():
        assert_interrupted(proc, signal.SIGTERM)


# ------------------------------------------------------------------ the handler's rules, in this process
@pytest.fixture
def lth_handlers():
    from lth import signals

    saved = {s: signal.getsignal(s) for s in signals.SIGNALS}
    signals.install_process_handlers()
    yield signals
    for s, handler in saved.items():
        signal.signal(s, handler)


def send(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.01)  # the handler runs in the main thread at the next bytecode


def test_a_signal_is_an_exception_no_except_exception_swallows(lth_handlers):
    with pytest.raises(lth_handlers.Interrupted) as caught:
        try:
            send(signal.SIGTERM)
        except Exception:  # what a library's guard does
            pass
    assert caught.value.exit_code == 143
    send(signal.SIGTERM)  # already stopping: a second SIGTERM is ignored
    with pytest.raises(lth_handlers.Interrupted):  # a second Ctrl-C stops at once
        send(signal.SIGINT)
    assert lth_handlers.received() == signal.SIGTERM  # not reported yet: lth.run still exits 143
    lth_handlers.reported()
    send(signal.SIGINT)  # the line is printed: ignored while the process exits
    assert lth_handlers.received() is None


def test_during_training_a_signal_is_noted_and_a_second_ctrl_c_stops_at_once(lth_handlers):
    lth_handlers.defer()
    send(signal.SIGTERM)
    send(signal.SIGTERM)
    assert lth_handlers.pending() == signal.SIGTERM
    with pytest.raises(lth_handlers.Interrupted):
        send(signal.SIGINT)
    assert lth_handlers.undefer() is None  # raised already: nothing left for the caller


def test_a_signal_noted_when_training_ends_is_returned_to_stop_for(lth_handlers):
    lth_handlers.defer()
    send(signal.SIGINT)
    assert lth_handlers.undefer() == signal.SIGINT
    assert lth_handlers.interrupted("here").exit_code == 130


def test_lightnings_exit_0_on_sigterm_becomes_interrupted():
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from lth.signals import Interrupted
    from lth.training.interrupt import stop_cleanly

    assert issubclass(SIGTERMException, SystemExit)  # Lightning's: exit code 0
    with pytest.raises(Interrupted) as caught:
        with stop_cleanly("during round 1 ticket"):
            raise SIGTERMException
    assert caught.value.exit_code == 143 and "during round 1 ticket" in str(caught.value)


SEED_RUNNER = """
import os, signal, sys
sys.argv[0] = "lth-run"
import lth.run
from lth.lottery import seeds
def train_together(todo):  # a signal while the seed launcher trains the seeds' dense rounds as one stack
    os.kill(os.getpid(), signal.SIGTERM)
seeds.train_together = train_together
lth.run.main()
"""


@pytest.mark.slow
def test_a_signal_in_the_seed_launcher_names_the_sweep_folder(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-c", SEED_RUNNER, "-m", "hydra/launcher=lth_seeds", "seed=0,1",
                           "stack_networks=true", *TINY, f"hydra.sweep.dir={sweep}"], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "WANDB_MODE": "offline"})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith(f"interrupted: SIGTERM") and f" in {sweep}. " in lines[-1], lines[-1]
