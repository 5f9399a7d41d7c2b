"""The configuration's schema: every key's name, type, default, doc, constraints, effect and when it is read.

Registered with Hydra's ConfigStore as ``lth_schema``, the first default of conf/config.yaml, so Hydra
types every key while composing; conf/ holds only the groups (model protocols, data, trainer, logger,
presets). ``--help``, the README's configuration table (:func:`markdown`), the checks
(:mod:`lth.validation`) and the experiment's identity (:mod:`lth.identity`) all read this module.

**Adding a setting is one field** in its group's dataclass::

    name: int = key(5, "what it does", ge=1, when=SGD, effect=SPEED)

- ``ge/gt/le/lt``, ``choices`` (a tuple; for a list, the choices of its items): its constraints;
- ``when``: a :class:`When` saying under which choices it is read. Set on the command line where it is
  not read, it is refused (one ``error:`` line saying what would make it take effect); outside its
  condition it is not part of the identity either;
- ``effect``: RESULT (default: part of the experiment's identity), SPEED or OUTPUT (changes nothing
  computed: outside the identity), PLAN (which networks run: controls, rounds) or BRANCH (keys only
  the branches that read it: ``Branch.settings`` in lth.lottery);
- ``probe``: another value, which tests/test_config_keys.py trains with to check the declared effect.

A rule between several keys is one entry of :data:`RULES`. This module must not import torch.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

RESULT, SPEED, OUTPUT, PLAN, BRANCH = "result", "speed", "output", "plan", "branch"
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
PROFILERS = (None, "simple", "advanced", "pytorch", "xla")
CHECKS = ("", "_shuffle", "_reinit", "_invert")
# Lightning's strategy and precision names (StrategyRegistry, lightning_fabric's _PRECISION_INPUT), here so that they
# are checked without importing Lightning; tests/test_validation.py fails when a Lightning upgrade changes them.
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", *(f"{s}_find_unused_parameters_{b}" for s in (
    "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook") for b in ("false", "true")), "deepspeed", "deepspeed_stage_1",
    "deepspeed_stage_2", "deepspeed_stage_2_offload", "deepspeed_stage_3", "deepspeed_stage_3_offload",
    "deepspeed_stage_3_offload_nvme", "fsdp", "fsdp_cpu_offload", "single_device", "single_xla", "xla_debug", "xla",
    "single_tpu")
PRECISIONS = (64, 32, 16, "transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
              "bf16-mixed", "32-true", "64-true", "64", "32", "16", "bf16")
CONTROLS = ("reinit", "random_prune", *(m + c for m in ("snip", "grasp", "synflow", "magnitude_init") for c in CHECKS))


def get(tree: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


@dataclass(frozen=True)
class When:
    """A condition on the other settings: ``words`` and ``fix`` (what to set) for messages, ``test`` on the
    resolved tree, ``enable``: overrides that make it true in tests/test_config_keys.py."""

    words: str
    test: Callable[[dict], bool]
    enable: tuple = ()
    fix: str = ""


def equals(dotted: str, value: Any) -> When:
    shown = str(value).lower() if isinstance(value, bool) else str(value)
    return When(f"{dotted}={shown}", lambda t: get(t, dotted) == value, (f"{dotted}={shown}",), f"{dotted}={shown}")


def uses(*branches: str) -> When:
    """Read when one of ``branches`` (or a sanity check of it: ``snip_shuffle``) is among the controls."""
    return When(f"controls has {' or '.join(branches)}", lambda t: any(
        c.rpartition("_")[0] in branches or c in branches for c in get(t, "controls") or ()), (f"controls=[{branches[0]}]",),
        f"controls=[{branches[0]}]" + "".join(f" (or {b})" for b in branches[1:]))


SGD, WARMUP, WANDB = equals("optimizer.name", "sgd"), equals("lr_warmup", True), equals("logger.name", "wandb")
LAYERWISE, GLOBAL, INSTABILITY = equals("prune.scheme", "layerwise"), equals("prune.scheme", "global"), equals("instability", True)
MILESTONES = When("schedule.milestones is not empty", lambda t: bool(get(t, "schedule.milestones")),
                  ("schedule.milestones=[5]",), "schedule.milestones=[ITERATION,...]")
BN_INSTABILITY = When("instability=true and the model has BatchNorm (ResNet, VGG)", lambda t: bool(t["instability"]) and str(
    get(t, "model.arch._target_")).rpartition(".")[2] in ("ResNet", "VGG"), (
    "instability=true", "model=resnet20", "model.arch.width=2", "analysis.interpolation_points=3"),
    "instability=true with a model that has BatchNorm")
GPU = When("trainer.accelerator is gpu, cuda or auto", lambda t: get(t, "trainer.accelerator") in ("gpu", "cuda", "auto"),
           ("trainer.accelerator=gpu",), "trainer=gpu")
IMAGEFOLDER = When("data=imagefolder", lambda t: get(t, "data._target_") == "lth.data.imagefolder.ImageFolderDataModule",
                   ("data=imagefolder",), "data=imagefolder data.path=PREPARED (python -m lth.data.prepare)")
DROPOUT = When("model.arch takes dropout (LeNet, Conv-2/4/6)", lambda t: "dropout" in (get(t, "model.arch") or {}),
               fix="a model whose model.arch takes dropout (model=lenet300_100, conv2, conv4, conv6)")


def key(default: Any, doc: str = "", *, when: When | None = None, effect: str = RESULT, probe: Any = None,
        **constraints: Any) -> Any:
    meta = {"doc": doc, "when": when, "effect": effect, "probe": probe, **constraints}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


RATE = dict(gt=0, lt=1)  # the share of remaining weights pruned per round


@dataclass
class TrainConfig:
    iterations: int = key(1000, "training iterations of every network", ge=1, probe=24)
    batch_size: int = key(60, "examples per optimizer step", ge=1, probe=30)
    augment: bool = key(False, "random crop (4-pixel padding) + horizontal flip", probe=True)


@dataclass
class OptimizerConfig:
    name: str = key("adam", "the optimizer", choices=("adam", "adamw", "sgd"), probe="sgd")
    lr: float = key(1e-3, "learning rate (after the warm-up)", gt=0, probe=0.05)
    momentum: float = key(0.0, "SGD momentum", when=SGD, ge=0, lt=1, probe=0.9)
    weight_decay: float = key(0.0, "L2 penalty (decoupled for adamw)", ge=0, probe=0.1)
    nesterov: bool = key(False, "Nesterov momentum (needs momentum > 0)", when=SGD, probe=True)
    compile: bool = key(False, "update + mask in one torch.compile'd function (a C++ compiler on the CPU)", probe=True)


@dataclass
class ScheduleConfig:
    milestones: List[int] = key([], "iterations where the learning rate is multiplied by gamma", ge=1, probe=[5])
    gamma: float = key(0.1, "the learning rate's factor at each milestone", when=MILESTONES, gt=0, probe=0.5)


@dataclass
class WarmupConfig:
    iterations: int = key(1000, "linear warm-up from 0 to optimizer.lr over this many iterations", when=WARMUP, ge=1,
                          probe=7)


@dataclass
class AnalysisConfig:
    interpolation_points: int = key(30, "α values on the instability path, ends included", when=INSTABILITY,
                                    effect=BRANCH, ge=2, probe=3)
    batchnorm: str = key("interpolate", "BN statistics of interpolated networks", when=BN_INSTABILITY, effect=BRANCH,
                         choices=("interpolate", "recompute"), probe="recompute")
    score_examples_per_class: int = key(10, "SNIP and GraSP score this many examples of every class, drawn "
                                        "class-balanced from the training split (the 2021 paper's code, GraSP's)",
                                        when=uses("snip", "grasp"), effect=BRANCH, ge=1, probe=3)
    synflow_iterations: int = key(100, "SynFlow's pruning iterations", when=uses("synflow"), effect=BRANCH, ge=1,
                                  probe=2)


@dataclass
class ModelConfig:
    name: str = key("lenet300_100", "the model's name (folder names, reports)", effect=OUTPUT, probe="x")
    dropout: Optional[float] = key(None, "dropout on hidden fc activations (model.arch.dropout)", when=DROPOUT, ge=0,
                                   lt=1, probe=0.5)
    arch: Dict[str, Any] = key({"_target_": "lth.models.LeNet"}, "the network: _target_ class, constructor arguments",
                               probe={"hidden": [50, 20]})
    rates: Dict[str, float] = key({}, "per kind (conv, fc, output): share of remaining weights pruned per round",
                                  when=LAYERWISE, choices=("conv", "fc", "output"), ge=0, lt=1,
                                  probe={"conv": 0.0, "fc": 0.5, "output": 0.1})
    global_rate: float = key(0.2, "share of remaining weights pruned per round", when=GLOBAL, **RATE, probe=0.5)
    exempt: List[str] = key([], "kinds (conv|fc|output) or globs over tensor names never pruned", probe=["output"])


@dataclass
class PruneConfig:
    scheme: str = key("layerwise", "layerwise: a rate per kind; global: one threshold over all tensors",
                      choices=("layerwise", "global"), probe="global")
    rounds: int = key(20, "pruning rounds after the dense round 0 (raising it continues the experiment)",
                      effect=PLAN, ge=0, probe=2)
    schedule: str = key("iterative", "oneshot: each level pruned in one step from the dense weights",
                        choices=("iterative", "oneshot"), probe="oneshot")
    rates: Any = key("${model.rates}", "layer-wise rates (default: model.rates)", when=LAYERWISE,
                     choices=("conv", "fc", "output"), ge=0, lt=1, probe={"conv": 0.0, "fc": 0.5, "output": 0.1})
    rate: Optional[float] = key("${model.global_rate}", "the global rate (default: model.global_rate)", when=GLOBAL,
                                **RATE, probe=0.5)
    exempt: Any = key("${model.exempt}", "tensors never pruned (default: model.exempt)", probe=["output"])


@dataclass
class DataConfig:
    _target_: str = key("lth.data.MNISTDataModule", "the LightningDataModule class", probe="lth.data.MNISTDataModule")
    root: Optional[str] = key("./data", "where the dataset files are", effect=OUTPUT, probe="/nonexistent")
    val_size: int = key(5000, "examples held out of the training file", ge=1, probe=200)
    split_seed: int = key(0, "the validation split's seed", ge=0, probe=1)
    download: bool = key(True, "fetch missing files (needs network)", effect=OUTPUT, probe=True)
    # data=imagefolder (a litdata dataset prepared by python -m lth.data.prepare); None elsewhere, not passed on
    path: Optional[str] = key(None, "the prepared dataset (local folder or object-store URL)", when=IMAGEFOLDER,
                              probe="/nonexistent")
    image_size: Optional[int] = key(None, "crop size (imagefolder.yaml: 224)", when=IMAGEFOLDER, ge=1, probe=64)
    num_workers: Optional[int] = key(None, "streaming loader workers; the data order depends on it (imagefolder.yaml: 4)",
                                     when=IMAGEFOLDER, ge=0, probe=0)


@dataclass
class TrainerConfig:
    accelerator: str = key("auto", "cpu | gpu | auto (CPU and GPU results differ in their last bits)",
                           choices=ACCELERATORS, probe="gpu")
    devices: Any = key(1, "devices for one experiment (>1: DDP)", probe=2)
    strategy: str = key("auto", "Lightning strategy (trainer=ddp sets ddp)", choices=STRATEGIES, probe="ddp")
    precision: Any = key("32-true", "Lightning precision", choices=PRECISIONS, probe="bf16-mixed")
    matmul_precision: str = key("highest", "float32 matmuls: highest (exact) | high | medium (TF32/bf16 Tensor Cores)",
                                when=GPU, choices=("highest", "high", "medium"), probe="high")
    torch_threads: int = key(1, "torch threads per network (the same in any parallel_branches)", effect=SPEED, ge=1,
                             probe=2)
    deterministic: Any = key(False, "Lightning's deterministic algorithms (true | false | warn): reproducible GPU runs; "
                             "CPU runs are reproducible either way", effect=SPEED, probe=True)
    enable_progress_bar: bool = key(True, "the progress bar on a terminal (piped: one line per training)",
                                    effect=OUTPUT, probe=False)
    steps_per_call: int = key(20, "optimizer steps per Lightning training_step call", effect=SPEED, ge=1, probe=1)
    profiler: Optional[str] = key(None, "a Lightning profiler", effect=OUTPUT, choices=PROFILERS, probe="simple")


@dataclass
class LoggerConfig:
    name: str = key("none", "wandb | none", effect=OUTPUT, choices=("wandb", "none"), probe="wandb")
    project: str = key("lth", "W&B project", when=WANDB, effect=OUTPUT, probe="x")
    entity: Optional[str] = key(None, "W&B entity", when=WANDB, effect=OUTPUT, probe="x")
    mode: str = key("auto", "online when logged in, else offline", when=WANDB, effect=OUTPUT,
                    choices=("auto", "online", "offline", "disabled"), probe="offline")
    tags: List[str] = key([], "W&B tags", when=WANDB, effect=OUTPUT, probe=["x"])
    group: Optional[str] = key(None, "W&B group (default: the setting's name)", when=WANDB, effect=OUTPUT, probe="x")
    log_artifacts: bool = key(False, "results, figures and masks as a W&B artifact at the end", when=WANDB,
                              effect=OUTPUT, probe=True)


@dataclass
class LthConfig:
    seed: int = key(0, "model initialisation and data order", ge=0, lt=2**32, probe=1)
    strategy: str = key("reset", "reset: survivors back to θ0 (θK) each round; continue: keep training",
                        choices=("reset", "continue"), probe="continue")
    rewind_iteration: int = key(0, "K: survivors reset to θK; schedule and data order resume at K", ge=0, probe=5)
    lr_warmup: bool = key(False, "linear warm-up over warmup.iterations", probe=True)
    controls: List[str] = key([], "branches beside the ticket at every level", effect=PLAN, choices=CONTROLS,
                              probe=["reinit"])
    instability: bool = key(False, "a second copy of each ticket with other SGD noise; the error barrier", effect=PLAN,
                            probe=True)
    eval_every: int = key(100, "evaluate validation (and test, see test_curve) every N iterations", ge=1, probe=5)
    test_curve: bool = key(False, "the test split at every evaluation (default: only at new validation minima and "
                           "at the end; the same results)", effect=OUTPUT, probe=True)
    eval_beside_training: Any = key("auto", "evaluate a copy of the weights in a thread beside training: auto (on "
                                    "the CPU where a core is free) | true | false; the same results",
                                    effect=SPEED, choices=("auto", True, False), probe=True)
    parallel_branches: Any = key("auto", "a level's trainings at once in worker processes: auto (usable cores / "
                                 "trainer.torch_threads) or N; 1: one after another; the same results",
                                 effect=SPEED, probe=2)
    stack_networks: Any = key("auto", "a level's networks as one stacked model: auto (on a GPU) | true | false; "
                              "float32 results agree within rounding", effect=SPEED, choices=("auto", True, False),
                              probe=True)
    divergence_factor: float = key(1000.0, "a validation loss above this x its start: diverged, stopped (0: off)",
                                   ge=0, probe=0.01)
    eval_batch_size: int = key(1000, "evaluation batch size", effect=SPEED, ge=1, probe=7)
    checkpoint_every: int = key(1000, "resumable checkpoint every N iterations", effect=SPEED, ge=1, probe=5)
    mask_gradients: bool = key(False, "also zero pruned weights' gradients (same results)", effect=SPEED, probe=True)
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


# (prune.rates and prune.exempt are typed Any: OmegaConf cannot merge an interpolation of another group,
# ${model.rates}, into a typed node; their entries are checked like model.rates'.)

# Rules between keys: (the key named, its problem or None). Checked after every key's own constraints.
RULES: list[tuple[str, Callable[[dict], str | None]]] = [
    ("rewind_iteration", lambda t: None if t["rewind_iteration"] < t["train"]["iterations"] else
     f"must be below train.iterations={t['train']['iterations']} (the iteration survivors are reset to); lower it "
     f"or raise train.iterations"),
    ("trainer.devices", lambda t: None if (lambda v: v == "auto" or (type(v) is int and (v >= 1 or v == -1)) or (
        isinstance(v, list) and v and all(type(i) is int and i >= 0 for i in v)))(t["trainer"]["devices"]) else
     "must be a positive integer, -1 (all), auto, or a list of device indices"),
    ("parallel_branches", lambda t: None if t["parallel_branches"] == "auto" or (
        type(t["parallel_branches"]) is int and t["parallel_branches"] >= 1) else "must be auto or a positive integer"),
    ("optimizer.nesterov", lambda t: None if not t["optimizer"]["nesterov"] or t["optimizer"]["momentum"] else
     "needs momentum: set e.g. optimizer.momentum=0.9 (or optimizer.nesterov=false)"),
    ("eval_beside_training", lambda t: None if t["eval_beside_training"] is not True or not t["data"]["num_workers"]
     else "cannot run beside a streamed dataset's loader processes (a fork while it evaluates deadlocks training): "
          "set data.num_workers=0, or eval_beside_training=auto (off there)"),
]


def fields() -> dict[str, dataclasses.Field]:
    """Every key, dotted, in schema order (the groups' keys under their group)."""
    return _fields(LthConfig, "")


@functools.cache
def _fields(cls: type, prefix: str) -> dict[str, dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    return {k: v for f in dataclasses.fields(cls) for k, v in (
        _fields(hints[f.name], f"{prefix}{f.name}.").items() if dataclasses.is_dataclass(hints[f.name]) else
        [(prefix + f.name, f)])}


def field_of(dotted: str) -> tuple[str, dataclasses.Field] | None:
    """The schema key that holds ``dotted`` (itself, or the dict or list key above it)."""
    keys = fields()
    while dotted and dotted not in keys:
        dotted = dotted.rpartition(".")[0]
    return (dotted, keys[dotted]) if dotted else None


def describe():
    """(key, default, when read, effect, doc) of every key: ``--help`` and the README's table."""
    for name, f in fields().items():
        when = f.metadata["when"]
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        yield name, default, when.words if when else "always", f.metadata["effect"], f.metadata["doc"]


def markdown() -> str:
    rows = [f"| `{n}` | `{d}` | {w} | {e} | {doc} |" for n, d, w, e, doc in describe()]
    return "\n".join(["| key | default | read | effect | what it does |", "|---|---|---|---|---|", *rows])


def register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="lth_schema", node=LthConfig)
