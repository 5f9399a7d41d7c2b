"""The schema of the composed configuration: every key, its type and its constraints, in one place.

Each config group is a dataclass; each key is one field whose type annotation is its type and
whose metadata (:class:`Rule`, declared with the helpers below) holds its constraints: a range,
a set of choices, the example shown in messages. :func:`lth.validation.validate_config` checks a
composed configuration against :class:`LthConfig` with one generic walker, so a new key is
checked by adding one field here (an unknown key is refused, with the closest known key
suggested). The classes are also valid OmegaConf structured configs
(``OmegaConf.structured(LthConfig)``).

Checks that need several keys, the model or the machine (``rewind_iteration`` below
``train.iterations``, a batch that fits the training set, exempt patterns that match a tensor, a
pruning plan that keeps a weight, a GPU for ``trainer=gpu``) are in :mod:`lth.validation`.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

# Lightning's accepted values (lightning_fabric.connector._PRECISION_INPUT; tests/test_validation.py
# checks that these lists match the installed Lightning).
PRECISIONS = (64, 32, 16, "64", "32", "16", "bf16", "transformer-engine", "transformer-engine-float16", "16-true",
              "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_false",
              "ddp_find_unused_parameters_true", "ddp_spawn_find_unused_parameters_false",
              "ddp_spawn_find_unused_parameters_true", "ddp_fork_find_unused_parameters_false",
              "ddp_fork_find_unused_parameters_true", "ddp_notebook_find_unused_parameters_false",
              "ddp_notebook_find_unused_parameters_true", "deepspeed", "deepspeed_stage_1", "deepspeed_stage_2",
              "deepspeed_stage_2_offload", "deepspeed_stage_3", "deepspeed_stage_3_offload",
              "deepspeed_stage_3_offload_nvme", "fsdp", "fsdp_cpu_offload", "single_device", "single_xla",
              "xla_debug", "xla", "single_tpu")
PROFILERS = ("simple", "advanced", "pytorch", "xla")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
PRUNABLE_KINDS = ("conv", "fc", "output")  # the kinds of lth.pruning.prunable_tensors


def control_names() -> tuple[str, ...]:
    """The branches selectable with ``controls=[...]`` (the registry of ``lth.lottery.branches``)."""
    from lth.lottery.branches import CONTROLS

    return CONTROLS


@dataclass(frozen=True)
class Rule:
    """The constraints of one setting. ``what`` is the rule in words, used in the message."""

    what: str = ""
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple | Callable[[], tuple] | None = None
    example: Any = None
    why: str = ""  # appended to the message, e.g. "(the share of remaining weights pruned per round)"
    keys: tuple | None = None  # for a dict: the keys it may hold
    items: Rule | None = None  # for a list or a dict: the rule of each entry
    validate: Callable[[Any], str | None] | None = None  # a check of the whole value: None or the problem

    def allowed(self) -> tuple | None:
        return self.choices() if callable(self.choices) else self.choices


def _setting(default: Any, rule: Rule | None = None, doc: str = "") -> Any:
    meta = {"rule": rule or Rule(), "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def positive_int(default: Any, example: Any = None, doc: str = "") -> Any:
    return _setting(default, Rule("a positive integer", ge=1, example=example or default or 1), doc)


def non_negative_int(default: Any, example: Any = None, doc: str = "") -> Any:
    return _setting(default, Rule("an integer >= 0", ge=0, example=example if example is not None else 0), doc)


def positive_number(default: Any, example: Any = None, doc: str = "") -> Any:
    return _setting(default, Rule("a positive number", gt=0, example=example or default), doc)


def rate(default: Any, zero_ok: bool = False, doc: str = "") -> Any:
    return _setting(default, Rule("strictly between 0 and 1", gt=None if zero_ok else 0, ge=0 if zero_ok else None,
                                  lt=1, example=0.2, why=" (the share of remaining weights pruned per round)"), doc)


def choice(default: Any, choices: tuple | Callable[[], tuple], doc: str = "") -> Any:
    return _setting(default, Rule(choices=choices), doc)


def flag(default: bool, doc: str = "") -> Any:
    return _setting(default, None, doc)


def text(default: Any, doc: str = "") -> Any:
    return _setting(default, None, doc)


# ------------------------------------------------------------------------ the groups
@dataclass
class TrainConfig:
    iterations: int = positive_int(1000, 1000, "training iterations of every round")
    batch_size: int = positive_int(60, 60)
    augment: bool = flag(False, "random crop (4-pixel padding) + horizontal flip")


@dataclass
class OptimizerConfig:
    name: str = choice("adam", ("adam", "adamw", "sgd"))
    lr: float = positive_number(1.0e-3, 1e-3)
    momentum: float = _setting(0.0, Rule("at least 0 and below 1", ge=0, lt=1, example=0.9, why=" (SGD only)"))
    weight_decay: float = _setting(0.0, Rule("a number >= 0", ge=0, example=1e-4))
    nesterov: bool = flag(False, "SGD only, needs momentum > 0")
    compile: bool = flag(False, "update + mask in one torch.compile'd function")


@dataclass
class ScheduleConfig:
    milestones: List[int] = _setting([], Rule(items=Rule("a positive integer (an iteration)", ge=1),
                                              example="[20000,25000]"))
    gamma: float = _setting(0.1, Rule("a positive number", gt=0, example=0.1, why=" (the LR factor at each milestone)"))


@dataclass
class WarmupConfig:
    iterations: int = non_negative_int(1000, 1000, "lr_warmup=true: linear from 0 to optimizer.lr over these")


@dataclass
class AnalysisConfig:
    interpolation_points: int = _setting(30, Rule("an integer >= 2", ge=2, example=30,
                                                  why=" (α values on the instability path, ends included)"))
    batchnorm: str = choice("interpolate", ("interpolate", "recompute"), "BN statistics of interpolated networks")
    score_batches: int = positive_int(1, 1, "training batches SNIP and GraSP score on")
    synflow_iterations: int = positive_int(100, 100, "SynFlow's pruning iterations")


def _check_arch(arch: dict) -> str | None:
    """``model.arch``: an importable ``_target_`` whose constructor takes the other keys."""
    import difflib
    import inspect

    import hydra.utils

    target = arch.get("_target_")
    if not isinstance(target, str) or not target:
        return "model.arch._target_ is missing: it names the network class, e.g. lth.models.LeNet"
    try:
        cls = hydra.utils.get_class(target)
    except Exception as exc:  # noqa: BLE001 - any import problem is the user's setting
        return f"model.arch._target_={target!r} cannot be imported ({exc.__class__.__name__}); e.g. lth.models.LeNet"
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    own = [n for n in params if n not in ("self", "input_shape", "num_classes")]
    for key in arch:
        if key.startswith("_") or key in own:
            continue
        close = difflib.get_close_matches(key, own, n=1)
        hint = f"; did you mean model.arch.{close[0]}?" if close else ""
        return f"model.arch.{key} is not a setting of {target}{hint} (its settings: {', '.join(own) or 'none'})"
    missing = [n for n in own if params[n].default is inspect.Parameter.empty and n not in arch]
    if missing:
        return f"model.arch.{missing[0]} is missing: {target} needs it; set +model.arch.{missing[0]}=..."
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - unresolvable annotations are not checked
        hints = {}
    for key, value in arch.items():
        if key in hints and not _matches(value, hints[key]):
            return (f"model.arch.{key}={value!r} does not fit {target}'s {key} "
                    f"({_type_name(hints[key])}); e.g. model.arch.{key}={_yaml(params[key].default)}"
                    if params[key].default is not inspect.Parameter.empty else
                    f"model.arch.{key}={value!r} does not fit {target}'s {key} ({_type_name(hints[key])})")
    return None


def _matches(value: Any, tp: Any) -> bool:
    """``value`` (from YAML: bool, int, float, str, list, dict, None) fits the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return True
    if tp is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, list):
            return False
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return len(args) != 1 or all(_matches(v, args[0]) for v in value)
    return True


def _type_name(tp: Any) -> str:
    if not typing.get_args(tp):
        return getattr(tp, "__name__", str(tp))
    return (str(tp).replace("typing.", "").replace("collections.abc.Sequence", "list")
            .replace("NoneType", "null").replace(" | None", " or null"))


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_yaml(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass
class ModelConfig:
    name: str = text("lenet300_100", "the model's name (folder names, reports)")
    dropout: Optional[float] = _setting(None, Rule("at least 0 and below 1", ge=0, lt=1, example=0.5),
                                        "dropout on hidden fc activations (passed on as model.arch.dropout)")
    arch: Dict[str, Any] = _setting({"_target_": "lth.models.LeNet"}, Rule(validate=_check_arch),
                                    "the network: _target_ class and its constructor arguments")
    rates: Dict[str, float] = _setting({}, Rule(keys=PRUNABLE_KINDS, items=Rule(
        "strictly between 0 and 1", ge=0, lt=1, example=0.2, why=" (the share of remaining weights pruned per round)")),
        "layer-wise: per-kind rate per round")
    global_rate: float = rate(0.2, doc="prune=global: the rate per round")
    exempt: List[str] = _setting([], None, "kinds (conv|fc|output) or globs over tensor names")


@dataclass
class PruneConfig:
    scheme: str = choice("layerwise", ("layerwise", "global"))
    rounds: int = non_negative_int(20, 20, "pruning rounds after the dense round 0 (0: the dense round only)")
    schedule: str = choice("iterative", ("iterative", "oneshot"))
    rates: Optional[Dict[str, float]] = _setting(None, Rule(keys=PRUNABLE_KINDS, items=Rule(
        "strictly between 0 and 1", ge=0, lt=1, example=0.2, why=" (the share of remaining weights pruned per round)")))
    rate: Optional[float] = rate(None)
    exempt: List[str] = _setting([], None)


@dataclass
class DataConfig:
    _target_: str = text("lth.data.MNISTDataModule", "the LightningDataModule class")
    root: str = text("./data")
    val_size: int = positive_int(5000, 5000, "examples held out of the training file")
    split_seed: int = non_negative_int(0)
    download: bool = flag(True)


@dataclass
class TrainerConfig:
    accelerator: str = choice("auto", ACCELERATORS)
    devices: Any = _setting(1, Rule(validate=lambda v: None if (
        v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and (v >= 1 or v == -1))
        or (isinstance(v, list) and v and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)))
        else f"trainer.devices={v!r} must be a positive integer, -1 (all), auto, or a list of device indices"))
    strategy: str = choice("auto", STRATEGIES)
    precision: Any = choice("32-true", PRECISIONS)
    deterministic: Any = _setting(False, Rule(validate=lambda v: None if isinstance(v, bool) or v == "warn" else
                                              f"trainer.deterministic={v!r} must be true, false or warn"))
    enable_progress_bar: bool = flag(True)
    steps_per_call: int = positive_int(20, 20)
    profiler: Optional[str] = choice(None, PROFILERS)


@dataclass
class LoggerConfig:
    name: str = choice("none", ("wandb", "none"))
    project: str = text("lth")
    entity: Optional[str] = text(None)
    mode: str = choice("auto", ("auto", "online", "offline", "disabled"))
    tags: List[str] = _setting([], None)
    group: Optional[str] = text(None, "W&B group (default: the setting's name)")


@dataclass
class AnalysisConfig:
    interpolation_points: int = _setting(30, Rule("an integer >= 2 (the path's ends included)", ge=2, example=30),
                                         "instability: α values on the linear path")
    batchnorm: str = choice("interpolate", ("interpolate", "recompute"), "BN statistics of interpolated networks")
    score_batches: int = positive_int(1, 1, "training batches SNIP and GraSP score on")
    synflow_iterations: int = positive_int(100, 100, "SynFlow's pruning iterations")


@dataclass
class LthConfig:
    seed: int = _setting(0, Rule("an integer >= 0 and below 2^32", ge=0, lt=2**32, example=1),
                         "model initialisation and data order")
    strategy: str = choice("reset", ("reset", "continue"))
    rewind_iteration: int = non_negative_int(0)
    lr_warmup: bool = flag(False)
    controls: List[str] = _setting([], Rule(items=Rule(choices=control_names), example="[reinit,random_prune]"))
    instability: bool = flag(False, "a second copy of each level's ticket; the error barrier between the two")
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    eval_every: int = positive_int(100, 100)
    eval_batch_size: int = positive_int(1000, 1000)
    checkpoint_every: int = positive_int(1000, 1000)
    mask_gradients: bool = flag(False)
    instability: bool = flag(False, "a second copy of each ticket with other SGD noise; the error barrier")
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
