"""The checks of a composed configuration, before anything is written or trained.

Each problem raises :class:`ConfigError`, one line naming the key and the fix; ``lth.run`` prints it
as ``error: ...`` and exits 2. :func:`check` runs, in order: the **settings** (each key's type and
constraints, a key set on the command line where it is not read, :data:`lth.config_schema.RULES`), the
**data** sizes, the **model** on the dataset's shape and the pruning plan, and **this machine** (a GPU,
a compiler). None imports torch, except for a data module or model class that lth does not know.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import operator
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lth.config_schema import RULES, fields, field_of, get


class ConfigError(ValueError):
    """A setting is wrong; the message (one line) names it and says how to fix it."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def resolved(cfg: DictConfig | dict) -> dict:
    """The configuration as plain containers, interpolations resolved, without ``hydra``."""
    if isinstance(cfg, dict):
        return {k: v for k, v in cfg.items() if k != "hydra"}
    try:
        return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True,
                                      throw_on_missing=True)
    except Exception as exc:  # noqa: BLE001 - a missing value or an interpolation that does not resolve
        raise ConfigError(f"{getattr(exc, 'full_key', '?')} cannot be resolved: {str(exc).splitlines()[0]}") from None


TYPES = {"bool": ("true or false", bool), "int": ("an integer", int), "float": ("a number", (int, float)),
         "str": ("a string", str)}
BOUNDS = {"gt": (">", operator.gt), "ge": (">=", operator.ge), "lt": ("<", operator.lt), "le": ("<=", operator.le)}


def check_value(name: str, value: Any) -> None:
    """The value of the schema key ``name`` against its declared type and constraints (a list's items, a dict's
    entries): as composed, or as Hydra parsed it from the command line, before OmegaConf would turn
    ``lr_warmup=yes`` into true, ``seed=1.5`` into 1 or ``data.root=123`` into a string."""
    f = fields()[name]
    meta, tp = f.metadata, re.sub(r"^Optional\[(.*)\]$", r"\1", str(f.type))
    item = re.sub(r"^(List\[|Dict\[str, )(.*)\]$", r"\2", tp)
    what, types = TYPES.get(item, ("a value", object))
    bounds = [f"{op} {meta[k]}" for k, (op, _) in BOUNDS.items() if k in meta]
    must = " and ".join([f"{what} {bounds[0]}", *bounds[1:]]) if bounds else what
    shown = show if item == "float" else repr
    if tp.startswith("List") and not isinstance(value, list):
        raise ConfigError(f"{name}={value} must be a list: write {name}=[{value}]")
    items = [(f"{name} contains {shown(v)}, which", v) for v in value] if isinstance(value, list) else [
        (f"{name}.{k}={shown(v)}", v) for k, v in value.items()] if isinstance(value, dict) else [
        (f"{name}={shown(value)}", value)]
    if isinstance(value, dict) and meta.get("choices"):  # the choices of a dict are its keys'
        if bad := next((k for k in value if k not in meta["choices"]), None):
            raise ConfigError(unknown(f"{name}.{bad}", meta["choices"]))
        meta = {**meta, "choices": None}
    for subject, v in (i for i in items if i[1] is not None):
        if meta.get("choices") is not None and v not in meta["choices"]:
            close = difflib.get_close_matches(str(v), [str(c) for c in meta["choices"]], n=1)
            raise ConfigError(f"{subject} is not known{f' (did you mean {close[0]}?)' if close else ''}; choose from "
                              f"{', '.join(map(str, meta['choices']))}")
        if types is not object and not (isinstance(v, types) and isinstance(v, bool) == (types is bool)):
            quote = f"; quote it: {name}='{v}'" if tp == "str" and v is value else ""
            raise ConfigError(f"{subject} must be {must}{quote}")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and (not math.isfinite(v) or any(
                k in meta and not op(v, meta[k]) for k, (_, op) in BOUNDS.items())):
            raise ConfigError(f"{subject} must be {must}")


def show(value: Any) -> str:
    """A number as typed on the command line (OmegaConf stores ``lr=0`` as 0.0)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else repr(value)


def _leaves(tree: dict, prefix: str = ""):
    for k, v in tree.items():
        yield from _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]


def check_settings(tree: dict, set_keys: list[str] = ()) -> None:
    """Every key known (Hydra adds a new ``+KEY``), of its type and within its constraints; a key set (``set_keys``:
    the command line's) where it is not read; the rules between keys."""
    for leaf in _leaves(tree):
        if field_of(leaf) is None:
            parts = leaf.split(".")
            at = next(i for i in range(1, len(parts) + 1) if not any(k == ".".join(parts[:i]) or k.startswith(
                ".".join(parts[:i]) + ".") for k in fields()))
            known = {k.split(".")[at - 1] for k in fields() if k.split(".")[:at - 1] == parts[:at - 1]}
            raise ConfigError(unknown(".".join(parts[:at]), sorted(known)))
    for name in fields():
        if (value := get(tree, name)) is not None:
            check_value(name, value)
    for given in set_keys:
        found = field_of(given)
        when = found and found[1].metadata["when"]
        if when and not when.test(tree):
            raise ConfigError(f"{given} is read only when {when.words}, so it would change nothing here; set "
                              f"{when.fix or when.words} for it to take effect, or drop {given}")
    for name, rule in RULES:
        if problem := rule(tree):
            raise ConfigError(f"{name}={get(tree, name)!r} {problem}")


def unknown(key: str, known: list[str]) -> str:
    prefix, _, last = key.rpartition(".")
    close = difflib.get_close_matches(last, known, n=1, cutoff=0.5)
    hint = f"; {REPLACED[key]}" if key in REPLACED else f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?" \
        if close else f" (known: {', '.join(known)})"
    return f"{key} is not a setting{' of ' + prefix if prefix else ''}{hint}"


def check(cfg: DictConfig | dict, set_keys: list[str] = (), machine: bool = True) -> None:
    """Raise :class:`ConfigError` for the first problem of ``cfg``: its settings, the data and model, this machine."""
    tree = resolved(cfg)
    check_settings(tree, set_keys)
    check_data_and_model(tree)
    if machine:
        check_machine(tree)


def check_data_and_model(tree: dict) -> None:
    """The data sizes fit the training file; the model builds on the dataset's shape with one output per
    class; exempt patterns match a tensor; every level keeps a weight where it prunes. Without torch for the
    built-in data and models (:mod:`lth.data.facts`, :mod:`lth.models.shapes`)."""
    from lth.data.facts import data_facts
    from lth.models.shapes import prunable_shapes
    from lth.pruning.prunable import is_exempt, prune_count

    d, m, p = data_facts(tree["data"]), tree["model"], tree["prune"]
    data, total, val = d.name, d.train_file_size, tree["data"]["val_size"]
    if isinstance(total, int) and not val < total:
        raise ConfigError(f"data.val_size={val} must be smaller than the {total:,} examples of data={data}'s training "
                          f"file; set e.g. data.val_size={min(5000, total // 10)}")
    if isinstance(total, int) and tree["train"]["batch_size"] > total - val:
        raise ConfigError(f"train.batch_size={tree['train']['batch_size']} is larger than the training set of "
                          f"data={data} ({total - val:,} examples); set train.batch_size={min(60, total - val)}")
    if not d.input_shape or not isinstance(d.num_classes, int):
        return  # the datamodule knows its shape once its data is opened (data=imagefolder): the experiment tells
    try:
        tensors = prunable_shapes(m["arch"], d.input_shape, d.num_classes)
    except Exception as exc:  # noqa: BLE001 - the settings cannot build this network for this data
        raise ConfigError(f"model={m['name']} does not fit data={data} (input {tuple(d.input_shape)}, "
                          f"{d.num_classes} classes) with model.arch={m['arch']}: {exc.__class__.__name__}: {exc}; "
                          f"check model.arch or drop the data= override") from None
    for pattern in p["exempt"]:
        if not any(is_exempt(t, [pattern]) for t in tensors):
            raise ConfigError(f"model.exempt contains {pattern!r}, which matches no prunable tensor of model={m['name']} "
                              f"({', '.join(t.name for t in tensors[:8])}); use a kind (conv, fc, output) or a glob")
    pruned = [t for t in tensors if not is_exempt(t, p["exempt"])]
    if not pruned:
        raise ConfigError(f"model.exempt={p['exempt']} exempts every prunable tensor: nothing to prune; remove some")
    layerwise = p["scheme"] == "layerwise"
    plans = [(t.numel, p["rates"].get(t.kind), f"model.rates.{t.kind}") for t in pruned] if layerwise else \
        [(sum(t.numel for t in pruned), p["rate"], "prune.rate")]
    for numel, rate, name in plans:
        if not (isinstance(rate, (int, float)) and 0 < rate < 1):
            raise ConfigError(f"{name}={show(rate)} must be a number > 0 and < 1 for model={m['name']}; set e.g. {name}=0.2")
        left = numel
        for level in range(1, p["rounds"] + 1):
            left = numel - prune_count(1 - (1 - rate) ** level, numel) if p["schedule"] == "oneshot" else \
                left - prune_count(rate, left)
            if left < 1:
                raise ConfigError(f"{name}={rate} with prune.rounds={p['rounds']} prunes every weight in round {level}: "
                                  f"set prune.rounds={level - 1} or lower {name}" if level > 1 else
                                  f"{name}={rate} prunes every weight in round 1; lower {name}")


def check_machine(tree: dict) -> None:
    """What this machine must have: a CUDA GPU for ``trainer=gpu``, a C++ compiler for optimizer.compile on the CPU,
    the dataset's files under ``data.root``, intact, or leave to download them (the data module's own errors)."""
    from lth.data.facts import check_files
    from lth.data.integrity import DatasetCorruptError
    from lth.data.torchvision_files import DatasetNotFoundError
    from lth.machine import device_type, has_cuda, missing_compiler

    t, d = tree["trainer"], tree["data"]
    if t["accelerator"] in ("gpu", "cuda") and not has_cuda():
        raise ConfigError(f"trainer.accelerator={t['accelerator']} (trainer=gpu or trainer=ddp) needs a CUDA GPU, and "
                          f"torch finds none here; use trainer=cpu (or trainer.accelerator=auto)")
    if reason := tree["optimizer"]["compile"] and missing_compiler(device_type(t)):
        raise ConfigError(f"optimizer.compile=true needs a C++ compiler for torch.compile on the CPU: {reason}; "
                          f"install one (e.g. g++) or set optimizer.compile=false")
    try:
        check_files(d["_target_"], d["root"], bool(d["download"]))
    except (DatasetNotFoundError, DatasetCorruptError) as exc:
        raise ConfigError(str(exc)) from None


def check_output_dir(path: Path | str) -> None:
    """``path`` is, or can be created as, a writable folder (probed with a real file); creates nothing."""
    path = ancestor = Path(path).expanduser().absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    try:
        os.close((probe := tempfile.mkstemp(prefix=".write-probe.", dir=ancestor))[0])
        return os.unlink(probe[1])
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise ConfigError(f"the output folder {path} cannot be created or written ({reason}); choose another one with "
                      f"hydra.run.dir=PATH (or hydra.sweep.dir=PATH for -m)")


def check_experiment(cfg: DictConfig, folder: Path) -> None:
    """An existing experiment folder holds this experiment; a folder beside it written by an older lth for
    this experiment is named, not silently left behind (read only)."""
    import json

    from lth.identity import experiment_hash

    if not (folder / "experiment.json").exists():
        for old in folder.parent.glob("*/experiment.json"):
            same = False
            with contextlib.suppress(Exception):  # best effort: a folder it cannot read is not this experiment
                same = json.loads(old.read_text()).get("format", 1) < 3 and experiment_hash(
                    OmegaConf.to_container(OmegaConf.load(old.parent / "config.yaml"))) == experiment_hash(cfg)
            if same:
                raise ConfigError(f"{old.parent} holds this experiment as written by an older lth (folder format "
                                      f"2, before experiments were keyed by what changes each network): it cannot be "
                                      f"continued; move it away to start this one in {folder}")
        return
    from lth.lottery.layout import Layout, check_experiment_json, lock_holder, running_elsewhere
    from lth.storage import CorruptFileError, is_writer

    try:
        check_experiment_json(Layout(folder), experiment_hash(cfg))
    except (ValueError, CorruptFileError) as exc:
        raise ConfigError(str(exc)) from None
    if is_writer() and (pid := lock_holder(folder)) is not None:  # (a DDP rank > 0 is its rank 0's run)
        raise ConfigError(running_elsewhere(folder, pid))


REPLACED = {"warmup.lr": "the warm-up ramps to optimizer.lr: set optimizer.lr instead",
            "analysis.score_batches": "SNIP and GraSP score examples of every class, drawn class-balanced (the "
                                      "authors' code): set analysis.score_examples_per_class"}


def hydra_message(exc: BaseException) -> str:
    """Hydra's and OmegaConf's composition errors as one line naming the setting."""
    cause = exc.__cause__ or exc
    text = str(exc).split("Config search path:")[0]
    full = getattr(cause, "full_key", None) or ""
    if options := getattr(exc, "options", None):
        group, option = re.search(r"Could not (?:find|load) '([^']+)/([^/']+)'", text).groups()
        close = difflib.get_close_matches(option, options, n=1)
        return (f"{group}={option} is not an option of {group}" + (f" (did you mean {group}={close[0]}?)" if close
                                                                   else "") + f"; choose {group}={', '.join(options)}")
    if type(exc).__name__ == "OverrideParseException":
        return f"cannot read the override {exc.override!r} ({text.splitlines()[0]}); write KEY=VALUE, lists as [a,b], " \
               f"quote: KEY='...'"
    if found := re.search(r"An item is already at '([^']+)'", text):
        return f"{found.group(1)} is already a setting: set it without the + ({found.group(1)}=VALUE)"
    if full and "not in" in str(cause):  # an unknown key: the choices the schema declares, else the keys there
        prefix = full.rpartition(".")[0]
        found = field_of(prefix)
        if choices := found and found[1].metadata.get("choices"):
            return unknown(full, list(choices))
        there = list(getattr(cause, "parent_node", None) or [])  # OmegaConf's error names the node it looked in
        if getattr(cause, "object_type", None) is dict:  # a free-form dict (model.arch, a launcher's parameters)
            has = f" (it has {', '.join(there)})" if there else ""
            return f"{full} is not an entry of {prefix}{has}; a new entry needs a +: +{full}=VALUE"
        return unknown(full, there or [k.rpartition(".")[2] for k in fields() if k.rpartition(".")[0] == prefix])
    return " ".join(f"{text} {cause if cause is not exc else ''}".split())
