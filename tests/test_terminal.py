"""Quiet at the terminal: a default run shows lth's lines and real problems only (lth/quiet.py)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings

import pytest

from lth.quiet import LOG_RULES, WARNING_FILTERS, LibraryMessageFilter, quiet

# The library messages a default quick start printed before lth.quiet existed.
SILENCED = {
    "W&B's anonymous-setting warning": r"anonymous setting has no effect",
    "Lightning's litlogger/litmodels tip": r"💡|litlogger|litmodels",
    "torch's pytree deprecation inside Lightning": r"LeafSpec",
    "Lightning's ModelCheckpoint manual-optimization warning": r"ModelCheckpoint with manual optimization|saved_models",
    "Lightning's logging-interval warning": r"smaller than the logging interval",
    "Lightning's max_steps line": r"`Trainer\.fit` stopped",
    "Lightning's TPU line": r"TPU available",
    "Lightning's GPU line": r"GPU available: ",
    "Lightning's CUDA device line": r"LOCAL_RANK",
    "Lightning's resume lines": r"Restoring states|Restored all states",
    "Lightning's matmul precision advice": r"set_float32_matmul_precision",
}
# lth's one line per finished training: level, branch, early-stop iteration, test accuracy, time.
TRAINING_LINE = re.compile(r"level (\d+)/\d+ (\w+) \([\d.]+% of weights\): early stop at iteration (\d+), "
                           r"test accuracy [\d.]+% \(final [\d.]+%\), [\d.]+s$")


def library_noise(output: str) -> list[str]:
    """Lines of ``output`` that are a library's chatter rather than lth's or a real problem."""
    bad = []
    for line in output.splitlines():
        if any(re.search(p, line) for p in SILENCED.values()):
            bad.append(line)
        elif re.search(r"Warning|WARNING", line) or "site-packages" in line:
            bad.append(line)  # any other library warning (Lightning prints them as "<file>:<line>: message")
    return bad


def run_piped(tmp_path, *overrides: str, runner: list[str] | None = None, env: dict | None = None):
    """``python -m lth.run`` with stdout and stderr piped (a cluster job's log), W&B offline."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    base["WANDB_MODE"] = "offline"  # the default logger (W&B), offline as on a machine without a login
    cmd = [sys.executable, *(runner or ["-m", "lth.run"]), "experiment=quickstart", "prune.rounds=1",
           "train.iterations=100", *overrides]
    return subprocess.run(cmd, cwd=tmp_path, env={**base, **(env or {})}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)


def check_piped_output(output: str, trained: list[tuple[str, str]]) -> None:
    """One line per finished training, no redraws, no library chatter, the ``wandb sync`` hint once, last."""
    assert "\r" not in output and "it/s" not in output, output  # no progress-bar redraws
    assert library_noise(output) == [], output
    lines = [line for line in output.splitlines() if line.strip()]
    done = [TRAINING_LINE.search(line) for line in lines]
    assert [(m[1], m[2]) for m in done if m] == trained, output
    # no line at a training's start, except for one that resumes from a checkpoint
    assert not any("iterations 0.." in line and "resuming" not in line for line in lines), output
    assert sum("wandb sync" in line for line in lines) == 1 and "wandb sync" in lines[-1], output


def test_quick_start_piped_prints_one_line_per_training_and_no_library_chatter(tmp_path):
    run_dir = tmp_path / "run"
    # checkpoint_every=50: a checkpoint inside the round (Lightning's ModelCheckpoint warning)
    out = run_piped(tmp_path, "checkpoint_every=50", f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stdout
    assert (run_dir / "results.csv").is_file()
    check_piped_output(out.stdout, [("0", "ticket"), ("1", "ticket"), ("1", "reinit")])


@pytest.mark.slow
def test_resumed_quick_start_piped_says_resuming_once_and_nothing_from_lightning(tmp_path):
    from tests.test_resume import RUNNER

    run_dir = tmp_path / "run"
    args = ["checkpoint_every=50", f"hydra.run.dir={run_dir}"]
    killed = run_piped(tmp_path, *args, runner=["-c", RUNNER],  # killed before level 1's ticket is marked done
                       env={"KILL_ON": "*/round_01/ticket/row.json"})
    assert killed.returncode == -9 and (run_dir / "round_01/ticket/checkpoints/last.ckpt").exists(), killed.stdout
    out = run_piped(tmp_path, *args)
    assert out.returncode == 0, out.stdout
    check_piped_output(out.stdout, [("1", "ticket"), ("1", "reinit")])
    assert sum("resuming from last.ckpt" in line for line in out.stdout.splitlines()) == 1, out.stdout


def test_terminal_keeps_the_progress_bar(tmp_path):
    """On a terminal (a pseudo-terminal here) the bar is drawn and redrawn in place."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # a 160-column terminal
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.Popen([sys.executable, "-m", "lth.run", "experiment=quickstart", "prune.rounds=1",
                             "controls=[]", "train.iterations=100", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=tmp_path, env=env, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    output = b"".join(chunks).decode(errors="replace")
    assert proc.wait(timeout=300) == 0, output
    redraws = [part for part in output.replace("\r\n", "\n").split("\r") if "level 1/1 ticket 80.2% weights |" in part]
    assert len(redraws) >= 2 and "it 100/100" in redraws[-1], output  # drawn, then redrawn in place


# One real message per filter in lth.quiet.WARNING_FILTERS, with the module that raises it.
SAMPLES = [
    ("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()` "
     "instead.", FutureWarning, "pytorch_lightning.utilities._pytree"),
    ("Using ModelCheckpoint with manual optimization and every_n_train_steps, but no pre-optimization state was "
     "saved.", UserWarning, "pytorch_lightning.callbacks.model_checkpoint"),
    ("The number of training batches (10) is smaller than the logging interval Trainer(log_every_n_steps=50).",
     UserWarning, "pytorch_lightning.loops.fit_loop"),
    ("Checkpoint directory /x/round_01/ticket/checkpoints exists and is not empty.", UserWarning,
     "pytorch_lightning.callbacks.model_checkpoint"),
]


def test_warning_filters_are_targeted():
    assert len(SAMPLES) == len(WARNING_FILTERS)
    for text, category, module in SAMPLES:
        with warnings.catch_warnings(record=True) as caught:  # restores the process's filters on exit
            warnings.simplefilter("always")
            quiet()
            warnings.warn_explicit(text, category, "x.py", 1, module=module)  # silenced
            warnings.warn_explicit(text, category, "x.py", 1, module="lth.something")  # not from Lightning: shown
            warnings.warn_explicit("another message", category, "x.py", 1, module=module)  # another message: shown
            warnings.warn_explicit(text, DeprecationWarning, "x.py", 1, module=module)  # another category: shown
        assert [str(w.message) for w in caught] == [text, "another message", text], text


def test_log_filter_drops_lightnings_device_resume_and_precision_lines():
    f = LibraryMessageFilter(LOG_RULES["utilities.rank_zero"])
    cuda = LibraryMessageFilter(LOG_RULES["accelerators.cuda"])

    def passes(msg: str, flt=f) -> bool:
        return flt.filter(logging.LogRecord("pytorch_lightning.utilities.rank_zero", logging.INFO, "x", 1, msg, None, None))

    # Lightning 2.6's exact texts (pytorch_lightning.trainer.setup, .connectors.checkpoint_connector,
    # .accelerators.cuda; lightning_fabric.accelerators.cuda)
    assert not passes("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
    assert not passes("`Trainer.fit` stopped: `max_steps=600` reached.")
    assert not passes("TPU available: False, using: 0 TPU cores")
    assert not passes("GPU available: True (cuda), used: True")
    assert not passes("Restoring states from the checkpoint path at /x/round_01/ticket/checkpoints/last.ckpt")
    assert not passes("Restored all states from the checkpoint at /x/round_01/ticket/checkpoints/last.ckpt")
    assert not passes("You are using a CUDA device ('NVIDIA H200') that has Tensor Cores. To properly utilize them, you "
                      "should set `torch.set_float32_matmul_precision('medium' | 'high')` which will trade-off precision")
    assert not passes("LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]", cuda)
    assert passes("Loaded model weights from the checkpoint at x.ckpt")  # anything else passes
    assert passes("LOCAL_RANK: 0 - something else", cuda)


def test_matmul_precision_setting_is_applied():
    import torch

    from lth.training.device import resolve_device
    from tests.conftest import compose_config

    before = torch.get_float32_matmul_precision()
    try:
        resolve_device(compose_config(["trainer=cpu", "trainer.matmul_precision=medium"]).trainer)
        assert torch.get_float32_matmul_precision() == "medium"
        resolve_device(compose_config(["trainer=cpu"]).trainer)
        assert torch.get_float32_matmul_precision() == "highest"  # the default: exact float32
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("name", ["pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda",
                                  "lightning_fabric.utilities.rank_zero", "lightning_fabric.accelerators.cuda"])
def test_quiet_attaches_one_filter_per_logger(name):
    quiet()
    quiet()
    assert sum(isinstance(f, LibraryMessageFilter) for f in logging.getLogger(name).filters) == 1


def test_the_printed_table_keeps_its_columns_with_long_branch_names():
    """``magnitude_init_shuffle`` (22 characters) pushed its row's numbers out of their columns."""
    from lth.results import format_table

    rows = [{"round": 1, "branch": b, "weights_remaining": 80.2, "es_iteration": 20, "test_acc_at_es": 0.9,
             "final_test_acc": 0.9, "min_val_loss": 0.4} for b in ("ticket", "magnitude_init_shuffle")]
    header, _, *lines = format_table(rows).splitlines()
    ends = [m.end() for m in re.finditer(r"remaining %|es iter|test@es|final test|min val loss", header)]
    for line in lines:
        assert [m.end() for m in re.finditer(r"\S+", line)][2:] == ends, (header, line)
