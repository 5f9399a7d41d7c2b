"""Experiment identity: folder names derived from the non-default settings plus a config hash.

Registered as OmegaConf resolvers used by ``hydra.run.dir`` / ``hydra.sweep.*`` in
``conf/config.yaml``. The same command (any order of overrides) gives the same folder, so
re-running it continues the experiment; a different configuration gives another folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

from omegaconf import DictConfig, OmegaConf

# Settings that do not change what is computed, left out of the identity. (mask_gradients:
# bit-identical results for the built-in optimizers, tested in tests/test_protocols.py.)
NON_IDENTITY_KEYS = (
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
_NAME_MAX = 100


def identity_config(cfg: DictConfig) -> dict:
    """The resolved configuration without the keys that do not affect results."""
    keep = [k for k in cfg.keys() if k != "hydra"]
    copy = OmegaConf.masked_copy(cfg, keep)
    container = OmegaConf.to_container(copy, resolve=True)
    for key in NON_IDENTITY_KEYS:
        parts = key.split(".")
        node = container
        for p in parts[:-1]:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return container


def config_hash(cfg: DictConfig) -> str:
    blob = json.dumps(identity_config(cfg), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def _sanitize(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text).strip("_")
    return text[:_NAME_MAX] or "default"


def _is_identity_override(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return not any(key == k or key.startswith(k + ".") for k in NON_IDENTITY_KEYS) and not key.startswith("trainer")


def experiment_name(cfg: DictConfig) -> str:
    """``<sorted non-default overrides>-<hash>``, e.g. ``model=conv2,seed=1-3fa9c2d1``."""
    overrides = list(cfg.hydra.overrides.task) if "hydra" in cfg else []
    kept = sorted(o for o in overrides if _is_identity_override(o))
    return f"{_sanitize(','.join(kept))}-{config_hash(cfg)}"


# Set by lth.report.SweepCallback.on_multirun_start in the launching process, inherited by the
# job processes: a job's own config only holds its own overrides (seed=1, not seed=0,1), so
# without the pin every job would compute a different sweep folder.
SWEEP_ENV = "LTH_SWEEP_NAME"


def sweep_name(cfg: DictConfig) -> str:
    """The sweep folder: its overrides (sweep lists included) plus a hash of them."""
    pinned = os.environ.get(SWEEP_ENV)
    if pinned:
        return pinned
    overrides = sorted(o for o in cfg.hydra.overrides.task if _is_identity_override(o))
    digest = hashlib.sha1("\n".join(overrides).encode()).hexdigest()[:8]
    return f"{_sanitize(','.join(overrides))}-{digest}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("lth_exp_name"):
        OmegaConf.register_new_resolver("lth_exp_name", lambda *, _root_: experiment_name(_root_))
    if not OmegaConf.has_resolver("lth_sweep_name"):
        OmegaConf.register_new_resolver("lth_sweep_name", lambda *, _root_: sweep_name(_root_))
