"""Checks of the composed configuration before anything is written or trained.

Each problem raises :class:`ConfigError` with one message that names the setting and says how
to fix it; ``lth.run`` prints it as one ``error:`` line and exits with status 2, before Hydra
creates or touches the experiment folder (:func:`check_command` composes and checks the command
line first).

:func:`validate_config` runs, in order:

1. the **schema** (:mod:`lth.config_schema`): every key known (the closest one suggested
   otherwise), every value of its type (no silent coercion: ``seed=1.5`` or ``lr_warmup=yes``
   are refused) and within the constraints declared next to its field; one generic walker;
2. the checks that need **several settings** (:func:`check_settings`);
3. the checks that need the **model** built on the dataset's shape, without loading data
   (:func:`check_model_fits_data`, :func:`check_pruning_plan`);
4. the checks of **this machine** (:func:`check_machine`: a GPU for ``trainer=gpu``, a C++
   compiler for ``optimizer.compile``).

Messages name the key a user sets: ``model.rates.fc`` when ``prune.rates`` is ``${model.rates}``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tempfile
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from lth.config_schema import LthConfig, Rule


class ConfigError(ValueError):
    """A setting is wrong; the message (always one line) names it and says how to fix it."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


# ---------------------------------------------------------------------- key names
class KeyNames:
    """Maps a key of the resolved configuration to the key a user sets (through interpolations)."""

    def __init__(self, cfg: DictConfig | dict | None):
        self.cfg = cfg if isinstance(cfg, DictConfig) else None

    def __call__(self, key: str) -> str:
        if self.cfg is None:
            return key
        for _ in range(8):  # follow ${a.b} chains
            source = self._source(key)
            if source is None:
                return key
            key = source
        return key

    def _source(self, key: str) -> str | None:
        parts = key.split(".")
        node: Any = self.cfg
        for i, part in enumerate(parts):
            if not isinstance(node, DictConfig) or part not in node:
                return None
            child = node._get_node(part)
            raw = child._value() if child is not None else None
            if isinstance(raw, str) and raw.startswith("${") and raw.endswith("}") and raw.count("${") == 1:
                inner = raw[2:-1]
                if ":" in inner:  # a resolver (oc.env, ...), not another key
                    return None
                return ".".join([inner, *parts[i + 1:]])
            try:
                node = node[part]
            except Exception:  # noqa: BLE001
                return None
        return None


def _show(value: Any) -> str:
    return repr(value)


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


# ---------------------------------------------------------------------- resolving
def resolved(cfg: DictConfig | dict, name: KeyNames | None = None) -> dict:
    """The configuration as plain containers with interpolations resolved, without ``hydra``."""
    name = name or KeyNames(cfg)
    if isinstance(cfg, dict):
        return {k: v for k, v in json.loads(json.dumps(cfg, default=str)).items() if k != "hydra"}
    out: dict = {}
    for key in cfg.keys():
        if key == "hydra":
            continue
        try:
            value = cfg[key]
            out[key] = OmegaConf.to_container(value, resolve=True, throw_on_missing=True) \
                if OmegaConf.is_config(value) else value
        except MissingMandatoryValue as exc:
            full = getattr(exc, "full_key", None) or str(key)
            raise ConfigError(f"{name(full)} is not set (???); set {name(full)}=VALUE") from None
        except OmegaConfBaseException as exc:
            full = getattr(exc, "full_key", None) or str(key)
            reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise ConfigError(f"{name(full)} cannot be resolved ({reason})") from None
    return out


# ---------------------------------------------------------------------- the schema walker
def _type_words(tp: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _fix(rule: Rule, key: str) -> str:
    return f"; set e.g. {key}={rule.example}" if rule.example is not None else ""


def _scalar_type_ok(value: Any, tp: Any) -> bool:
    from lth.config_schema import _matches

    return _matches(value, tp) if tp in (bool, int, float, str) else True


def _wrong_type(key: str, value: Any, tp: Any, rule: Rule, item_of: str | None = None) -> ConfigError:
    words = rule.what if rule.what else _type_words(tp)
    if tp is int and "integer" not in words:
        words = f"an integer {words}"
    if tp is float and not words.startswith(("a ", "an ")):
        words = f"a number {words}"
    if item_of is not None:
        return ConfigError(f"{item_of} contains {_show(value)}: each entry must be {words}{_fix(rule, item_of)}")
    return ConfigError(f"{key}={_show(value)} must be {words}{rule.why}{_fix(rule, key)}")


def _check_scalar(value: Any, tp: Any, rule: Rule, key: str, item_of: str | None = None) -> None:
    if not _scalar_type_ok(value, tp):
        raise _wrong_type(key, value, tp, rule, item_of)
    if tp is float and not math.isfinite(float(value)):
        raise _wrong_type(key, value, tp, rule, item_of)
    allowed = rule.allowed()
    if allowed is not None and not any(value == a and type(value) is not bool for a in allowed):
        shown = list(dict.fromkeys("null" if a is None else str(a) for a in allowed))
        close = difflib.get_close_matches(str(value), shown, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        if item_of is not None:
            raise ConfigError(f"{item_of} contains {_show(value)}{hint}; choose from {item_of}=[{','.join(shown)}]")
        listed = shown if len(shown) <= 10 else [*shown[:10], f"... ({len(shown)} in all)"]
        options = f"{key}={listed[0]}" if len(listed) == 1 else \
            f"{key}={', '.join(listed[:-1])} or {listed[-1]}" if len(listed) <= 10 else f"{key}={', '.join(listed)}"
        raise ConfigError(f"{key}={_show(value)} is not known{hint}; choose {options}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        bad = ((rule.gt is not None and not v > rule.gt) or (rule.ge is not None and not v >= rule.ge)
               or (rule.lt is not None and not v < rule.lt) or (rule.le is not None and not v <= rule.le))
        if bad:
            if item_of is not None:
                raise ConfigError(f"{item_of} contains {_show(value)}: each entry must be {rule.what}{rule.why}")
            raise ConfigError(f"{key}={_show(value)} must be {rule.what}{rule.why}{_fix(rule, key)}")
    if rule.validate is not None:
        problem = rule.validate(value)
        if problem:
            raise ConfigError(problem)


# Keys of earlier versions: where what they set went.
REPLACED_KEYS = {"warmup.lr": "the warm-up ramps to optimizer.lr, the learning rate trained with: set optimizer.lr",
                 "analysis.score_batches": "SNIP and GraSP score examples of every class, drawn class-balanced (the "
                                           "authors' code): set analysis.score_examples_per_class"}


def _unknown_key(key: str, known: list[str], prefix: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    where = f" of {prefix}" if prefix else ""
    hint = f"; did you mean {_join(prefix, close[0])}?" if close else ""
    if _join(prefix, key) in REPLACED_KEYS:
        hint = f"; {REPLACED_KEYS[_join(prefix, key)]} instead"
    return ConfigError(f"{_join(prefix, key)} is not a setting{where}{hint} (known: {', '.join(known)})")


def check_value(value: Any, tp: Any, rule: Rule, key: str, name: KeyNames | None = None) -> None:
    """Check ``value`` against the type ``tp`` and ``rule``; raise :class:`ConfigError` naming ``key``."""
    name = name or KeyNames(None)
    shown = name(key)
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        check_group(value, tp, key, name)
        return
    if origin in (list, typing.List):
        if not isinstance(value, list):
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                raise ConfigError(f"{shown}={value} must be a list: write {shown}=[{value}]")
            raise ConfigError(f"{shown}={_show(value)} must be a list, e.g. {shown}={rule.example or '[]'}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        for item in value:
            check_value_item(item, item_tp, rule.items or Rule(), shown, name)
        if rule.validate is not None and (problem := rule.validate(value)):
            raise ConfigError(problem)
        return
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{shown}={_show(value)} must be a group of settings ({shown}.KEY=VALUE)")
        _, val_tp = typing.get_args(tp) or (str, Any)
        for k, v in value.items():
            if rule.keys is not None and k not in rule.keys:
                raise _unknown_key(str(k), list(rule.keys), shown)
            check_value(v, val_tp, rule.items or Rule(), _join(key, k), name)
        if rule.validate is not None and (problem := rule.validate(value)):
            raise ConfigError(problem)
        return
    if tp is Any:
        _check_scalar(value, Any, rule, shown)
        return
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{shown} must be {_type_words(tp)}, not a {'group' if isinstance(value, dict) else 'list'}")
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ConfigError(f"{shown}={value} must be a string; quote it: {shown}='{value}'")
    _check_scalar(value, tp, rule, shown)


def check_value_item(item: Any, tp: Any, rule: Rule, list_key: str, name: KeyNames) -> None:
    if typing.get_origin(tp) is typing.Union:
        if item is None:
            return
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if isinstance(item, (dict, list)) or (tp is not Any and not _scalar_type_ok(item, tp)):
        raise _wrong_type(list_key, item, tp, rule, item_of=list_key)
    _check_scalar(item, tp, rule, list_key, item_of=list_key)


def check_group(value: Any, schema: type, prefix: str = "", name: KeyNames | None = None) -> None:
    """Check a group of settings (a dict) against a schema dataclass, field by field."""
    name = name or KeyNames(None)
    if not isinstance(value, dict):
        raise ConfigError(f"{name(prefix)}={_show(value)} must be a group of settings ({name(prefix)}.KEY=VALUE)")
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in value:
        if key not in fields:
            raise _unknown_key(str(key), list(fields), name(prefix) if prefix else "")
    for fname, f in fields.items():
        key = _join(prefix, fname)
        if fname not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{name(key)} is missing; set +{name(key)}=VALUE")
            continue
        check_value(value[fname], hints[fname], f.metadata.get("rule", Rule()), key, name)


def check_schema(tree: dict, name: KeyNames | None = None, schema: type = LthConfig) -> None:
    """The generic walker over :class:`lth.config_schema.LthConfig`, then OmegaConf's own merge."""
    check_group(tree, schema, "", name)
    try:  # the schema is a structured config too: the merge must agree with the walker
        OmegaConf.merge(OmegaConf.structured(schema), tree)
    except OmegaConfBaseException as exc:
        full = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{(name or KeyNames(None))(full)}: {str(exc).splitlines()[0]}") from None


# ---------------------------------------------------------------------- the whole configuration
def validate_config(cfg: DictConfig | dict, check_model: bool = True, environment: bool = True) -> None:
    """Raise :class:`ConfigError` for the first wrong setting of ``cfg``.

    ``check_model`` builds the model on the dataset's shape (no data is loaded); ``environment``
    checks this machine (GPU, compiler), which a sweep launched to a cluster leaves to its jobs.
    """
    name = KeyNames(cfg)
    tree = resolved(cfg, name)
    check_schema(tree, name)
    check_settings(tree, name)
    if check_model:
        check_model_fits_data(tree, name)
    if environment:
        check_machine(tree)


def check_settings(tree: dict, name: KeyNames | None = None) -> None:
    """The checks that need several settings."""
    name = name or KeyNames(None)
    iterations = tree["train"]["iterations"]
    rewind = tree["rewind_iteration"]
    if not rewind < iterations:
        raise ConfigError(
            f"rewind_iteration={rewind!r} must be an integer in [0, train.iterations={iterations}): it is the iteration "
            f"the survivors are reset to; lower it or raise train.iterations"
        )
    if tree["lr_warmup"] and tree["warmup"]["iterations"] < 1:
        raise ConfigError(f"warmup.iterations={tree['warmup']['iterations']!r} must be a positive integer with "
                          f"lr_warmup=true; set e.g. warmup.iterations=1000 (or lr_warmup=false)")
    opt = tree["optimizer"]
    if opt["name"] != "sgd":
        for key, off, shown in (("momentum", 0.0, "0"), ("nesterov", False, "false")):
            if opt.get(key, off) != off:
                raise ConfigError(f"optimizer.{key}={opt[key]!r} is used by optimizer.name=sgd only, and "
                                  f"optimizer.name={opt['name']} would ignore it; set optimizer.{key}={shown} "
                                  f"or optimizer.name=sgd")
    elif opt.get("nesterov") and not opt.get("momentum"):
        raise ConfigError("optimizer.nesterov=true needs momentum: set e.g. optimizer.momentum=0.9 "
                          "(or optimizer.nesterov=false)")
    model = tree["model"]
    if model.get("dropout") and "dropout" not in model["arch"]:
        raise ConfigError(f"model.dropout={model['dropout']!r} is not used by model={model.get('name')} (its "
                          f"model.arch takes no dropout); remove the override")
    p = tree["prune"]
    if p["scheme"] == "layerwise" and p.get("rates") is None:
        raise ConfigError("prune.rates is missing: prune=layerwise needs a rate per layer kind; "
                          "set +prune.rates={conv:0.1,fc:0.2,output:0.1}")
    if p["scheme"] == "global" and p.get("rate") is None:
        raise ConfigError("prune.rate is missing: prune=global needs one rate per round; set +prune.rate=0.2")
    check_data_sizes(tree, name)


def _datamodule_class(tree: dict):
    import hydra.utils

    target = tree["data"]["_target_"]
    try:
        return hydra.utils.get_class(target)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"data._target_={target!r} cannot be imported ({exc.__class__.__name__}: {exc}); "
                          f"choose one of the data= options") from None


def check_data_sizes(tree: dict, name: KeyNames | None = None) -> None:
    """``data.val_size`` and ``train.batch_size`` fit the training file (its size is a class attribute)."""
    dm_cls = _datamodule_class(tree)
    total = getattr(dm_cls, "train_file_size", None)
    if not isinstance(total, int):
        return
    data_name = getattr(dm_cls, "name", tree["data"]["_target_"])
    val = tree["data"]["val_size"]
    if not val < total:
        raise ConfigError(f"data.val_size={val} must be smaller than the {total:,} examples of data={data_name}'s "
                          f"training file; set e.g. data.val_size={min(5000, total // 10)}")
    batch = tree["train"]["batch_size"]
    if batch > total - val:
        raise ConfigError(f"train.batch_size={batch} is larger than the training set of data={data_name} "
                          f"({total - val:,} examples after data.val_size={val} are held out); "
                          f"set train.batch_size={min(60, total - val)} or lower data.val_size")


# ---------------------------------------------------------------------- the model
_MODEL_CACHE: dict[str, list] = {}


def _model_tensors(tree: dict, name: KeyNames) -> list:
    """Build the model on the dataset's shape, run one zero sample through it; its prunable tensors.

    Uses the datamodule *class* (its ``input_shape`` and ``num_classes``), so no data is loaded.
    """
    import torch

    from lth.models import build_model
    from lth.pruning import prunable_tensors

    dm_cls = _datamodule_class(tree)
    model_name = tree["model"].get("name", "?")
    data_name = getattr(dm_cls, "name", tree["data"]["_target_"])
    shape = getattr(dm_cls, "input_shape", None)
    classes = getattr(dm_cls, "num_classes", None)
    if not isinstance(shape, tuple) or not shape or not isinstance(classes, int):
        return []  # the datamodule only knows its shape once loaded; the experiment will tell
    arch = tree["model"]["arch"]
    key = json.dumps([arch, shape, classes], sort_keys=True, default=str)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    try:
        model = build_model(OmegaConf.create(arch), shape, classes, 0)
    except Exception as exc:  # noqa: BLE001 - the settings cannot build this network
        exc = exc.__cause__ or exc  # hydra's InstantiationException wraps the constructor's error
        raise ConfigError(
            f"model={model_name} cannot be built with model.arch={json.dumps(arch)} for data={data_name} (input shape "
            f"{tuple(shape)}, {classes} classes): {exc.__class__.__name__}: {exc}. Check model.arch, or pick the "
            f"model's own dataset (drop the data= override)") from None
    try:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros((1, *shape)))
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(
            f"model={model_name} does not fit data={data_name} (input shape {tuple(shape)}, {classes} classes): "
            f"{exc.__class__.__name__}: {exc}. Pick the model's own dataset (drop the data= override) "
            f"or a model made for {data_name}"
        ) from None
    if tuple(out.shape) != (1, classes):
        raise ConfigError(
            f"model={model_name} gives outputs of shape {tuple(out.shape)[1:]} for data={data_name}, which has "
            f"{classes} classes; drop the data= override or pick a model made for {data_name}"
        )
    _MODEL_CACHE[key] = prunable_tensors(model)
    return _MODEL_CACHE[key]


def check_model_fits_data(cfg: DictConfig | dict, name: KeyNames | None = None) -> None:
    """The model builds on the dataset's shape and gives one output per class; then the pruning plan."""
    if isinstance(cfg, DictConfig):
        name = name or KeyNames(cfg)
        cfg = resolved(cfg, name)
    name = name or KeyNames(None)
    tensors = _model_tensors(cfg, name)
    if tensors:
        check_pruning_plan(cfg, tensors, name)


def _survivors(total: int, rate: float, rounds: int, oneshot: bool) -> list[int]:
    """Weights left after each level 0..rounds (``lth.pruning.magnitude.prune_count``'s arithmetic)."""
    from lth.pruning.magnitude import prune_count

    left = [total]
    for level in range(1, rounds + 1):
        if oneshot:
            left.append(total - prune_count(1.0 - (1.0 - rate) ** level, total))
        else:
            left.append(left[-1] - prune_count(rate, left[-1]))
    return left


def check_pruning_plan(tree: dict, tensors: list, name: KeyNames | None = None) -> None:
    """Exempt patterns match a tensor; every level keeps at least one weight where it prunes."""
    from lth.pruning.prunable import is_exempt

    name = name or KeyNames(None)
    p = tree["prune"]
    model_name = tree["model"].get("name", "?")
    exempt = list(p.get("exempt") or [])
    exempt_key = name("prune.exempt")
    for pattern in exempt:
        if not any(is_exempt(t, [pattern]) for t in tensors):
            names = ", ".join(t.name for t in tensors[:12]) + (", ..." if len(tensors) > 12 else "")
            kinds = ", ".join(k for k in ("conv", "fc", "output") if any(t.kind == k for t in tensors))
            raise ConfigError(
                f"{exempt_key} contains {pattern!r}, which matches no prunable tensor of model={model_name}, so it "
                f"exempts nothing; use a kind it has ({kinds}) or a glob over its tensor names: {names}")
    pruned = [t for t in tensors if not is_exempt(t, exempt)]
    if not pruned:
        raise ConfigError(f"{exempt_key}={exempt} exempts every prunable tensor of model={model_name}: "
                          f"there is nothing to prune; remove some of them")
    rounds = p["rounds"]
    oneshot = p.get("schedule") == "oneshot"
    if p["scheme"] == "layerwise":
        rates = p["rates"]
        for kind in sorted({t.kind for t in pruned}):
            key = name(f"prune.rates.{kind}")
            if kind not in rates:
                raise ConfigError(f"prune.rates has no rate for the {kind} layers of model={model_name}; "
                                  f"set +{key}=0.2")
            if not 0.0 < rates[kind] < 1.0:
                raise ConfigError(f"{key}={rates[kind]!r} must be strictly between 0 and 1 (the share of remaining "
                                  f"weights pruned per round); set e.g. {key}=0.2")
        plans = [(t.name, t.numel, rates[t.kind], name(f"prune.rates.{t.kind}"), f"the {t.kind} tensor {t.name}")
                 for t in pruned]
    else:
        total = sum(t.numel for t in pruned)
        plans = [("all", total, p["rate"], name("prune.rate"), "the non-exempt tensors")]
    for _, numel, rate, key, what in plans:
        left = _survivors(numel, float(rate), rounds, oneshot)
        if left[-1] >= 1:
            continue
        empty = next(level for level, n in enumerate(left) if n < 1)
        possible = empty - 1
        trail = ", ".join(f"{n:,} after round {lvl}" for lvl, n in enumerate(left[1:empty + 1], 1))
        raise ConfigError(
            f"{key}={rate!r} with prune.rounds={rounds} prunes every weight of {what} ({numel:,} weights: {trail}); "
            f"at this rate at most {possible} round(s) keep a weight: set prune.rounds={possible} or lower {key}"
            if possible >= 1 else
            f"{key}={rate!r} prunes every weight of {what} ({numel:,} weights) in round 1; lower {key}")


# ---------------------------------------------------------------------- this machine
def check_machine(tree: dict) -> None:
    """What this machine must have: a GPU for ``trainer=gpu``, a C++ compiler for ``optimizer.compile``."""
    import importlib.util

    import torch

    t = tree["trainer"]
    accel = t["accelerator"]
    if accel in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={accel} (trainer=gpu or trainer=ddp) needs a CUDA GPU, and torch "
                              f"finds none on this machine; use trainer=cpu (or trainer.accelerator=auto)")
        devices = t["devices"]
        count = torch.cuda.device_count()
        wanted = devices if isinstance(devices, int) and devices > 0 else (len(devices) if isinstance(devices, list) else 0)
        if wanted > count:
            raise ConfigError(f"trainer.devices={devices} asks for {wanted} GPUs, and this machine has {count}; "
                              f"set trainer.devices={count}")
    if accel == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("trainer.accelerator=mps needs Apple's Metal (MPS), which torch does not find here; "
                          "use trainer=cpu (or trainer.accelerator=auto)")
    if str(t["precision"]).startswith("transformer-engine") and importlib.util.find_spec("transformer_engine") is None:
        raise ConfigError(f"trainer.precision={t['precision']} needs NVIDIA's transformer_engine package, which is not "
                          f"installed; use e.g. trainer.precision=bf16-mixed")
    if tree["optimizer"].get("compile"):
        try:
            from lth.training.device import resolve_device
        except ImportError:  # before the training/ package existed
            from lth.experiment import resolve_device
        from lth.pruning.compiled_optimizer import missing_compiler

        reason = missing_compiler(resolve_device(OmegaConf.create(t)))
        if reason:
            raise ConfigError(f"optimizer.compile=true needs a C++ compiler for torch.compile on the CPU: {reason}. "
                              f"Install one (e.g. g++) or set optimizer.compile=false")


def check_data_files(cfg: DictConfig | dict) -> None:
    """The dataset's files are where ``data.root`` says, intact (MD5), or may be downloaded.

    Raises the data module's own errors (``DatasetNotFoundError``, ``DatasetCorruptError``).
    """
    tree = resolved(cfg) if isinstance(cfg, DictConfig) else cfg
    dm_cls = _datamodule_class(tree)
    check = getattr(dm_cls, "check_files", None)
    if check is not None:
        check(tree["data"]["root"], bool(tree["data"].get("download", False)))


# ---------------------------------------------------------------------- output folders
def check_output_dir(path: Path | str) -> None:
    """The experiment folder can be created and written (probed with a real file, so it also works as root)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"the output folder {path} is not writable ({exc.strerror or exc}); choose another one with "
            f"hydra.run.dir=PATH (or hydra.sweep.dir=PATH for -m)"
        ) from None


def check_output_override(path: Path | str) -> None:
    """Without creating anything: ``path`` is a writable folder, or its nearest existing ancestor is one."""
    path = Path(path).expanduser().absolute()
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.is_dir():
        try:  # probed with a real file (removed at once), so that it also works as root and on odd mounts
            fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=ancestor)
            os.close(fd)
            os.unlink(probe)
            return
        except OSError as exc:
            reason = exc.strerror or str(exc)
    else:
        reason = f"{ancestor} is a file, not a folder"
    raise ConfigError(f"the output folder {path} cannot be created ({reason}); choose another one with "
                      f"hydra.run.dir=PATH (or hydra.sweep.dir=PATH for -m)")


# ---------------------------------------------------------------------- the command line
def known_keys(prefix: str, schema: type = LthConfig) -> list[str] | None:
    """The keys the schema knows under ``prefix`` (``""``: the top level); None when open or unknown."""
    tp: Any = schema
    rule = Rule()
    for part in [p for p in prefix.split(".") if p]:
        if typing.get_origin(tp) is typing.Union:
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        if not dataclasses.is_dataclass(tp):
            return None
        fields = {f.name: f for f in dataclasses.fields(tp)}
        if part not in fields:
            return None
        rule = fields[part].metadata.get("rule", Rule())
        tp = typing.get_type_hints(tp)[part]
    if typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return [f.name for f in dataclasses.fields(tp)]
    return list(rule.keys) if rule.keys else None


def hydra_error_message(exc: BaseException, overrides: list[str]) -> str:
    """Hydra's own (multi-line) composition and override errors, as one line naming the setting."""
    import re

    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(exc).split("Config search path:")[0]
    if isinstance(exc, MissingConfigException):
        found = re.search(r"Could not (?:find|load) '(.+)/([^/']+)'", text)
        if found and exc.options:
            group, option = found.groups()
            close = difflib.get_close_matches(option, list(exc.options), n=1)
            hint = f" (did you mean {group}={close[0]}?)" if close else ""
            return f"{group}={option} is not an option of {group}{hint}; choose {group}=" + ", ".join(exc.options)
    if isinstance(exc, OverrideParseException):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        for o in overrides:
            try:
                parser.parse_override(o)
            except Exception as inner:  # noqa: BLE001
                first = str(inner).splitlines()[0] if str(inner) else ""
                return (f"cannot read the override {o!r} ({first}); write KEY=VALUE, lists as KEY=[a,b], and quote "
                        f"values with special characters: KEY='...'")
    found = re.match(r"Could not override '([^']+)'", text)
    if found and "not in struct" in str(exc.__cause__ or ""):
        key = found.group(1)
        prefix, _, last = key.rpartition(".")
        known = known_keys(prefix)
        if known and last in known:  # a key of another option of the group (logger.mode with logger=none)
            given = next((o for o in overrides if o.lstrip("+~").partition("=")[0] == key), f"{key}=VALUE")
            return (f"{key} is not part of this configuration: the {prefix} option chosen has no {last}; choose "
                    f"the {prefix}= option that has it, or add it with +{given.lstrip('+')}")
        if known:
            return str(_unknown_key(last, known, prefix))
        return f"{key} is not a setting; a new key needs a + in front: +{key}=..."
    found = re.search(r"An item is already at '([^']+)'", text)
    if found:
        return f"{found.group(1)} is already a setting: override it without the + ({found.group(1)}=VALUE)"
    if "Ambiguous value for argument" in text:
        found = re.search(r"argument '([^']+)'", text)
        arg = found.group(1) if found else "KEY=a,b"
        return (f"{arg} is a sweep: add -m to run one experiment per value, or write a list as [a,b] "
                f"or a string as '{arg.partition('=')[2]}'")
    return " ".join(text.replace("\t", " ").split())


@dataclasses.dataclass
class CommandCheck:
    """What :func:`check_command` found: the mode, and for a sweep the jobs refused before launching."""

    multirun: bool = False
    jobs: int = 1
    refused: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (overrides, message)


_LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher")


def _user_data_errors() -> tuple[type[BaseException], ...]:
    from lth.data.integrity import DatasetCorruptError
    from lth.data.torchvision_files import DatasetNotFoundError

    return (DatasetNotFoundError, DatasetCorruptError)


def _check_job(cfg: DictConfig, environment: bool) -> None:
    """Everything about one job that can be checked before Hydra creates its folder."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} interpolations
    validate_config(cfg, check_model=True, environment=environment)
    if environment:
        try:
            check_data_files(cfg)
        except _user_data_errors() as exc:
            raise ConfigError(str(exc)) from None


def _check_run_folder(cfg: DictConfig) -> None:
    """The run folder can be created; an existing one holds this experiment (read-only checks)."""
    run_dir = OmegaConf.select(cfg, "hydra.run.dir", throw_on_resolution_failure=False)
    if not run_dir:
        return
    path = Path(str(run_dir))
    check_output_override(path)
    if not (path / "experiment.json").exists():
        return
    try:
        from lth.identity import experiment_hash
        from lth.lottery.layout import Layout, check_experiment_json
    except ImportError:  # the identity/lottery modules of an older layout: the experiment checks at start
        return
    from lth.storage import CorruptFileError

    try:
        check_experiment_json(Layout(path), experiment_hash(cfg))
    except (ValueError, CorruptFileError) as exc:
        raise ConfigError(str(exc)) from None


def check_command(argv: list[str], config_dir: str, config_name: str = "config", task_name: str = "run"
                  ) -> CommandCheck | None:
    """Compose the command line as Hydra will and check it, before Hydra creates or writes anything.

    A single run is checked whole (settings, model, machine, data files, run folder). A ``-m``
    sweep with Hydra's basic sweeper has every job composed and checked (the machine only for
    local launchers: a cluster job runs elsewhere); it is refused when every job is, and otherwise
    returns the refused jobs (which the sweep then records as failed). Returns None when the
    command is not a run (``--help``, ``--cfg``, ...), which Hydra handles itself.
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path, get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.types import RunMode

    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.shell_completion or args.config_dir or args.config_path:
        return None
    show_only = bool(args.cfg or args.info)  # --cfg/--info: only Hydra's own errors are turned into one line
    config_name = args.config_name or config_name
    overrides = list(args.overrides)
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(task_name=task_name, config_search_path=create_automatic_config_search_path(
            None, None, config_dir))
        try:
            mode = hydra.get_mode(config_name=config_name, overrides=overrides)
            multirun = bool(args.multirun) or mode == RunMode.MULTIRUN
            cfg = hydra.compose_config(config_name, overrides, run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN,
                                       with_log_configuration=False)
        except (HydraException, OmegaConfBaseException) as exc:
            raise ConfigError(hydra_error_message(exc, overrides)) from exc
        if show_only:
            return None
        if not multirun:
            _check_job(cfg, environment=True)
            _check_run_folder(cfg)
            return CommandCheck()
        return _check_sweep(hydra, cfg)
    finally:
        GlobalHydra.instance().clear()


def _check_sweep(hydra: Any, cfg: DictConfig) -> CommandCheck:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    sweep_dir = OmegaConf.select(cfg, "hydra.sweep.dir", throw_on_resolution_failure=False)
    if sweep_dir:
        check_output_override(str(sweep_dir))
    if "BasicSweeper" not in str(cfg.hydra.sweeper.get("_target_", "")):
        return CommandCheck(multirun=True, jobs=0)  # another sweeper chooses its jobs as it goes
    environment = any(name in str(cfg.hydra.launcher.get("_target_", "")) for name in _LOCAL_LAUNCHERS)
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    task_overrides = list(OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False))
    try:
        parsed = OverridesParser.create(config_loader=hydra.config_loader).parse_overrides(params + task_overrides)
        jobs = [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(hydra_error_message(exc, task_overrides)) from exc
    refused: list[tuple[str, str]] = []
    common = set.intersection(*(set(job) for job in jobs)) if len(jobs) > 1 else set()
    for job in jobs:
        label = " ".join(o for o in job if o not in common)  # what tells this job from the others
        try:
            job_cfg = hydra.config_loader.load_sweep_config(cfg, job)
            _check_job(job_cfg, environment)
        except (HydraException, OmegaConfBaseException) as exc:
            refused.append((label, hydra_error_message(exc, job)))
        except ConfigError as exc:
            refused.append((label, str(exc)))
    if jobs and len(refused) == len(jobs):
        messages = list(dict.fromkeys(m for _, m in refused))
        if len(messages) == 1:
            raise ConfigError(messages[0] if len(jobs) == 1 else f"every job of the sweep is refused: {messages[0]}")
        raise ConfigError("every job of the sweep is refused: " + "; ".join(
            f"job {i} ({o}): {m}" for i, (o, m) in enumerate(refused)))
    return CommandCheck(multirun=True, jobs=len(jobs), refused=refused)
