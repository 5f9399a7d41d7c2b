"""The one definition of "the same experiment", used by the folder name, W&B and the report.

An experiment's *identity* is its resolved configuration without

- the settings that change nothing computed (speed, output, logging: ``SPEED_AND_OUTPUT_KEYS``),
- the settings that only add branches beside the ticket (``BRANCH_KEYS``: controls, instability,
  pruning-at-initialization options): adding a control to a finished experiment reuses its folder,
  masks and tickets and trains only the new networks.

From it derive:

- :func:`experiment_hash` names the experiment folder (with the non-default overrides) and is
  stored in its ``experiment.json``; the same command (any order of overrides) finds the same folder;
- :func:`setting_hash` (identity without ``seed``) groups the seeds of one setting as trials, for
  the W&B group and the report alike;
- :func:`dense_hash` (identity without the pruning settings and the rewind point) names the dense
  round shared by experiments that differ only in how they prune or where they rewind.

The device (``trainer.accelerator``) is part of the identity: CPU and GPU runs are not bit-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Settings that do not change what is computed. (mask_gradients: bit-identical results for the
# built-in optimizers, tested in tests/test_protocols.py.)
SPEED_AND_OUTPUT_KEYS = (
    "mask_gradients",
    "hydra",
    "logger",
    "data.root",
    "data.download",
    "trainer.enable_progress_bar",
    "trainer.profiler",
    "trainer.steps_per_call",
    "checkpoint_every",
    "eval_batch_size",
)
# Settings that only add branches (lth.lottery.branches) beside the ticket, or more levels: raising
# prune.rounds continues the experiment, lowering it reports the levels already trained.
BRANCH_KEYS = ("controls", "instability", "analysis", "prune.rounds")
# Settings that the dense round 0 does not depend on.
PRUNING_KEYS = ("prune", "strategy", "rewind_iteration", "model.rates", "model.global_rate", "model.exempt")
_NAME_MAX = 100


def _container(cfg: DictConfig | dict) -> dict:
    if isinstance(cfg, DictConfig):
        keep = [k for k in cfg.keys() if k != "hydra"]
        return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keep), resolve=True)
    return json.loads(json.dumps(cfg, default=str))


def _without(container: dict, keys: tuple[str, ...]) -> dict:
    for key in keys:
        *parents, last = key.split(".")
        node: Any = container
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return container


def identity_config(cfg: DictConfig | dict) -> dict:
    """The resolved configuration without the keys that do not define the experiment."""
    return _without(_container(cfg), SPEED_AND_OUTPUT_KEYS + BRANCH_KEYS)


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def experiment_hash(cfg: DictConfig | dict) -> str:
    return _digest(identity_config(cfg))


def setting_hash(cfg: DictConfig | dict) -> str:
    """The experiment without its seed: seeds of one setting are trials of it."""
    return _digest(_without(identity_config(cfg), ("seed",)))


def dense_hash(cfg: DictConfig | dict) -> str:
    """What the dense round 0 depends on (not how later rounds prune or where they rewind)."""
    return _digest(_without(identity_config(cfg), PRUNING_KEYS))


def setting_name(cfg: DictConfig | dict) -> str:
    """``<model>-<prune scheme>-<setting hash>``: the W&B group and the report's setting key."""
    c = _container(cfg)
    return f"{c['model']['name']}-{c['prune']['scheme']}-{setting_hash(c)}"


# ---------------------------------------------------------------------- folder names
def _sanitize(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text).strip("_")
    return text[:_NAME_MAX] or "default"


def _names_identity(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    skipped = SPEED_AND_OUTPUT_KEYS + BRANCH_KEYS + ("trainer",)
    return not any(key == k or key.startswith(k + ".") for k in skipped)


def experiment_name(cfg: DictConfig) -> str:
    """``<sorted non-default overrides>-<experiment hash>``, e.g. ``model=conv2,seed=1-3fa9c2d1``."""
    overrides = list(cfg.hydra.overrides.task) if "hydra" in cfg else []
    kept = sorted(o for o in overrides if _names_identity(o))
    return f"{_sanitize(','.join(kept))}-{experiment_hash(cfg)}"


# Set by lth.report.SweepCallback.on_multirun_start in the launching process, inherited by the
# job processes: a job's own config only holds its own overrides (seed=1, not seed=0,1), so
# without the pin every job would compute a different sweep folder.
SWEEP_ENV = "LTH_SWEEP_NAME"


def sweep_name(cfg: DictConfig) -> str:
    """The sweep folder: its overrides (sweep lists included) plus a hash of them."""
    pinned = os.environ.get(SWEEP_ENV)
    if pinned:
        return pinned
    overrides = sorted(o for o in cfg.hydra.overrides.task if _names_identity(o))
    digest = hashlib.sha1("\n".join(overrides).encode()).hexdigest()[:8]
    return f"{_sanitize(','.join(overrides))}-{digest}"


def _if(condition, then, otherwise):
    """``${lth_if:${lr_warmup},0.03,0.1}``: a protocol value that depends on another setting."""
    return then if condition else otherwise


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("lth_if"):
        OmegaConf.register_new_resolver("lth_if", _if)
    if not OmegaConf.has_resolver("lth_exp_name"):
        OmegaConf.register_new_resolver("lth_exp_name", lambda *, _root_: experiment_name(_root_))
    if not OmegaConf.has_resolver("lth_sweep_name"):
        OmegaConf.register_new_resolver("lth_sweep_name", lambda *, _root_: sweep_name(_root_))
