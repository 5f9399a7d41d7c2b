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
    "Lightning's TPU line": r"TPU available: False",
}


def library_noise(output: str) -> list[str]:
    """Lines of ``output`` that are a library's chatter rather than lth's or a real problem."""
    bad = []
    for line in output.splitlines():
        if any(re.search(p, line) for p in SILENCED.values()):
            bad.append(line)
        elif re.search(r"Warning|WARNING", line) or "site-packages" in line:
            bad.append(line)  # any other library warning (Lightning prints them as "<file>:<line>: message")
    if sum("GPU available" in line for line in output.splitlines()) > 1:
        bad.append("'GPU available' shown more than once")
    return bad


def test_quick_start_prints_no_library_chatter(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["WANDB_MODE"] = "offline"  # the default logger (W&B), offline as on a machine without a login
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "lth.run", "experiment=quickstart", "prune.rounds=1", "train.iterations=100",
         "checkpoint_every=50",  # a checkpoint inside the round: Lightning's ModelCheckpoint warning
         f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    output = out.stdout + out.stderr
    assert out.returncode == 0, output
    assert (run_dir / "results.csv").is_file()
    assert "round 1" in output and "wandb sync" in output  # lth's own lines are still there
    assert library_noise(output) == [], output


# One real message per filter in lth.quiet.WARNING_FILTERS, with the module that raises it.
SAMPLES = [
    ("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()` "
     "instead.", FutureWarning, "pytorch_lightning.utilities._pytree"),
    ("Using ModelCheckpoint with manual optimization and every_n_train_steps, but no pre-optimization state was "
     "saved.", UserWarning, "pytorch_lightning.callbacks.model_checkpoint"),
    ("The number of training batches (10) is smaller than the logging interval Trainer(log_every_n_steps=50).",
     UserWarning, "pytorch_lightning.loops.fit_loop"),
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


def test_log_filter_drops_and_keeps_once():
    f = LibraryMessageFilter(LOG_RULES["utilities.rank_zero"])

    def passes(msg: str) -> bool:
        return f.filter(logging.LogRecord("pytorch_lightning.utilities.rank_zero", logging.INFO, "x", 1, msg, None, None))

    assert not passes("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
    assert not passes("`Trainer.fit` stopped: `max_steps=600` reached.")
    assert not passes("TPU available: False, using: 0 TPU cores")
    assert passes("TPU available: True, using: 8 TPU cores")
    assert passes("GPU available: True (cuda), used: True")
    assert not passes("GPU available: True (cuda), used: True")  # once per process
    assert passes("Restoring states from the checkpoint path at last.ckpt")  # anything else passes


@pytest.mark.parametrize("name", ["pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda"])
def test_quiet_attaches_one_filter_per_logger(name):
    quiet()
    quiet()
    assert sum(isinstance(f, LibraryMessageFilter) for f in logging.getLogger(name).filters) == 1
