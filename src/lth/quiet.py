"""Quiet at the terminal: lth's own lines and real problems only.

Each library message a default run printed is silenced here, one targeted filter per
message (its text and where it comes from), never a blanket filter, so any other warning
still reaches the researcher. ``quiet()`` is called once at start-up by ``lth.run`` (and is
safe to call again: every DDP rank and multirun job does); tests call it too.

What was silenced and why (Lightning 2.6, W&B 0.31, torch 2.14):

- ``wandb: WARNING The anonymous setting has no effect ...``: Lightning's ``WandbLogger``
  always passes ``anonymous=None`` to ``wandb.init``, which W&B's settings validator reports
  before any run setting applies. W&B's own ``silent`` setting (the one lth's tracker already
  gives its run) is set for the process with ``wandb.setup`` before the run starts, by
  ``lth.tracking.Tracker`` through :func:`quiet_wandb`, with the run's mode.
- Lightning's ``💡 Tip: ... litlogger`` / ``litmodels`` advertisement (an INFO record of
  ``pytorch_lightning.utilities.rank_zero``, once per Trainer, i.e. every round).
- ``isinstance(treespec, LeafSpec) is deprecated`` (FutureWarning from torch, raised inside
  ``pytorch_lightning.utilities._pytree``): Lightning's code, nothing a user can change.
- ``Using ModelCheckpoint with manual optimization and every_n_train_steps ...`` (15 lines
  with example code): lth checkpoints the state *after* the optimizer step on purpose, the
  state a resumed round continues from.
- ``The number of training batches (N) is smaller than the logging interval``: Lightning
  counts lth's groups of steps (``trainer.steps_per_call``) as batches; lth logs its own
  evaluation curve at ``eval_every`` and does not use Lightning's epoch logging.
- ``Trainer.fit stopped: max_steps=N reached``: every round ends that way by design.
- ``Checkpoint directory ... exists and is not empty``: a resumed round continues from the
  checkpoint in that folder, on purpose.

- Lightning's device and resume lines, once per training: ``GPU available: ..., used: ...``,
  ``TPU available: ...``, ``LOCAL_RANK: r - CUDA_VISIBLE_DEVICES: [...]`` (lth's config says which
  device runs; a GPU present but unused still gets Lightning's warning, which passes),
  ``Restoring states from the checkpoint path ...`` / ``Restored all states ...`` (lth says
  ``resuming from last.ckpt`` itself).
- Lightning's advice to call ``torch.set_float32_matmul_precision`` on Tensor-Core GPUs: lth sets
  the precision from ``trainer.matmul_precision`` (default ``highest``, the exact one, on purpose).

- litdata's INFO lines, several per training on a streamed dataset (``data=imagefolder``):
  ``StreamingDataset POSIX-fast posix: mmap chunks in place ...`` (how it reads a local folder) and
  ``max_cache_size is unset; using N GB ...`` (the default size of its download cache).

Lightning's real warnings pass.
"""

from __future__ import annotations

import logging
import re
import warnings

# (message regex, category, module regex): Python's warning filters match the message from its
# start (case-insensitively) and the module of the line that raised it from its start.
_LIGHTNING = r"(pytorch_lightning|lightning\.pytorch)\."
WARNING_FILTERS: tuple[tuple[str, type[Warning], str], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, _LIGHTNING + r"utilities\._pytree"),
    (r"Using ModelCheckpoint with manual optimization and every_n_train_steps", UserWarning,
     _LIGHTNING + r"callbacks\.model_checkpoint"),
    (r"The number of training batches \(\d+\) is smaller than the logging interval", UserWarning,
     _LIGHTNING + r"loops\.fit_loop"),
    (r"Checkpoint directory .* exists and is not empty", UserWarning, _LIGHTNING + r"callbacks\.model_checkpoint"),
)

# Lightning's INFO records: logger -> (regex, what to do): "drop" always, "once" per process.
LOG_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "utilities.rank_zero": (
        (r"💡 Tip: For seamless cloud", "drop"),
        (r"`Trainer\.fit` stopped: `max_steps=\d+` reached", "drop"),
        (r"TPU available: ", "drop"),
        (r"GPU available: ", "drop"),
        (r"Restoring states from the checkpoint path", "drop"),
        (r"Restored all states from the checkpoint", "drop"),
        (r"You are using a CUDA device .* that has Tensor Cores", "drop"),
    ),
    "accelerators.cuda": ((r"LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES: ", "drop"),),
    # lth prints the one interrupted: line (lth.training.interrupt)
    "trainer.connectors.signal_connector": ((r"(\[rank: \d+\] )?Received SIGTERM", "drop"),
                                            (r"Bypassing SIGTERM", "drop")),
}
# litdata's INFO records (data=imagefolder), by logger
LITDATA_LOG_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "litdata.streaming.dataset": ((r"StreamingDataset POSIX-fast \S+: mmap chunks in place", "drop"),),
    "litdata.utilities.format": ((r"max_cache_size is unset; using ", "drop"),),
}
# lightning_fabric: its rank_zero logger and CUDA accelerator say the same things for Fabric's code.
_LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")


class LibraryMessageFilter(logging.Filter):
    """Drops the listed records of one library logger; lets ``once`` records through once."""

    def __init__(self, rules: tuple[tuple[str, str], ...]):
        super().__init__()
        self.rules = [(re.compile(pattern), action) for pattern, action in rules]
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        for pattern, action in self.rules:
            if pattern.match(message):
                if action == "drop":
                    return False
                if pattern.pattern in self.seen:
                    return False
                self.seen.add(pattern.pattern)
                return True
        return True


def quiet_warnings() -> None:
    """Install the targeted warning filters (idempotent: Python de-duplicates equal filters)."""
    for message, category, module in WARNING_FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def quiet_lightning_logs() -> None:
    """Attach the record filters to Lightning's and litdata's loggers (once per logger)."""
    loggers = {f"{package}.{name}": rules for package in _LIGHTNING_PACKAGES for name, rules in LOG_RULES.items()}
    for name, rules in {**loggers, **LITDATA_LOG_RULES}.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, LibraryMessageFilter) for f in logger.filters):
            logger.addFilter(LibraryMessageFilter(rules))


def quiet_wandb(mode: str) -> None:
    """W&B's own ``silent`` setting for the process, set before the run starts (lth reports W&B
    problems itself and prints the ``wandb sync`` command of an offline run). With the run's ``mode``:
    W&B 0.31 settles the mode of its process-wide settings here, and without it asks for an API key
    even for an offline run (which then failed: W&B was off on every machine without a login)."""
    try:
        import wandb

        wandb.setup(settings=wandb.Settings(silent=True, mode=mode))
    except Exception as exc:  # W&B never stops an experiment (see lth.tracking)
        logging.getLogger("lth").debug("wandb.setup failed: %s", exc)


def quiet() -> None:
    """Everything above but W&B's (``lth.tracking.Tracker`` sets that with the run's mode)."""
    quiet_warnings()
    quiet_lightning_logs()
