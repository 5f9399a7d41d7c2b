"""The one definition of "the same experiment", read off the schema (:mod:`lth.config_schema`).

An experiment's *identity* is every key whose declared effect is ``result``, where its ``when`` holds
(a key that is not read changes nothing). Outside it: speed and output keys, the plan (``controls``,
``instability``, ``prune.rounds``: adding a control or a round reuses every finished network) and the
``branch`` keys (``analysis.*``), which key only the branches that read them (:func:`branch_digest`,
in each such branch's folder name). From it derive:

- :func:`experiment_hash`, stored in ``experiment.json`` and ending the folder's name;
- :func:`setting_hash` (without ``seed``): the seeds of one setting, for W&B and the report;
- :func:`dense_hash` (without the pruning keys): the dense round shared by experiments that differ
  only in how they prune or where they rewind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lth.config_schema import RESULT, fields, get

PRUNING_KEYS = ("prune.", "strategy", "rewind_iteration", "model.rates", "model.global_rate", "model.exempt")
SWEEP_ENV = "LTH_SWEEP_NAME"  # set by lth.report.SweepCallback: every job of a sweep names the same sweep folder


def _tree(cfg: DictConfig | dict) -> dict:
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    return json.loads(json.dumps(cfg, default=str))


def identity_config(cfg: DictConfig | dict) -> dict:
    """``{dotted key: value}`` of the keys that determine the experiment's networks."""
    tree = _tree(cfg)
    return {name: get(tree, name) for name, f in fields().items()
            if f.metadata["effect"] == RESULT and (f.metadata["when"] is None or f.metadata["when"].test(tree))}


def digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def experiment_hash(cfg: DictConfig | dict) -> str:
    return digest(identity_config(cfg))


def setting_hash(cfg: DictConfig | dict) -> str:
    """The experiment without its seed: seeds of one setting are trials of it."""
    return digest({k: v for k, v in identity_config(cfg).items() if k != "seed"})


def dense_hash(cfg: DictConfig | dict) -> str:
    """What the dense round 0 depends on (not how later rounds prune or where they rewind)."""
    return digest({k: v for k, v in identity_config(cfg).items() if not k.startswith(PRUNING_KEYS)})


def branch_digest(cfg: DictConfig | dict, keys: tuple[str, ...]) -> str:
    """The settings of ``keys`` (a branch's ``analysis.*``) as the suffix of that branch's folder."""
    tree = _tree(cfg)
    return digest({k: get(tree, k) for k in keys})


def setting_name(cfg: DictConfig | dict) -> str:
    """``<model>-<prune scheme>-<setting hash>``: the W&B group and the report's setting key."""
    tree = _tree(cfg)
    return f"{tree['model']['name']}-{tree['prune']['scheme']}-{setting_hash(tree)}"


def names_experiment(override: str) -> bool:
    """An override that names the folder: a group, or a key of the identity."""
    key = override.split("=", 1)[0].lstrip("+~")
    f = fields().get(key) or next((f for k, f in fields().items() if key.startswith(k + ".")), None)
    return key.split(".")[0] not in ("hydra", "trainer", "logger") and (f is None or f.metadata["effect"] == RESULT)


def _sanitize(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text).strip("_")[:100] or "default"


def experiment_name(cfg: DictConfig) -> str:
    """``<sorted overrides of the identity>-<experiment hash>``, e.g. ``model=conv2,seed=1-3fa9c2d1``."""
    kept = sorted(o for o in (cfg.hydra.overrides.task if "hydra" in cfg else []) if names_experiment(o))
    return f"{_sanitize(','.join(kept))}-{experiment_hash(cfg)}"


def sweep_name(cfg: DictConfig) -> str:
    """The sweep folder: its overrides (sweep lists included) plus a hash of them."""
    overrides = sorted(o for o in cfg.hydra.overrides.task if names_experiment(o))
    return os.environ.get(SWEEP_ENV) or f"{_sanitize(','.join(overrides))}-{digest(overrides)}"


def register_resolvers() -> None:
    """``${lth_if:${lr_warmup},0.03,0.1}`` (a protocol value that depends on another setting) and the folder names."""
    for name, fn in (("lth_if", lambda c, then, otherwise: then if c else otherwise),
                     ("lth_exp_name", lambda *, _root_: experiment_name(_root_)),
                     ("lth_sweep_name", lambda *, _root_: sweep_name(_root_))):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
