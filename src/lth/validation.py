"""Checks of the composed configuration before any training starts.

Each problem raises :class:`ConfigError` with one message that names the setting and says
how to fix it; ``lth.run`` prints it and exits with status 2, before anything is written
to the experiment folder.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A setting is wrong; the message names it and says how to fix it."""


def _positive_int(key: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{key}={value!r} must be a positive integer; set e.g. {key}=1")


def _user_key(node: DictConfig, key: str, path: str) -> str:
    """The key a user sets: ``model.rates.fc`` when ``prune.rates`` is ``${model.rates}``."""
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        head, tail = ".".join(parts[:i]), parts[i:]
        try:
            inner = OmegaConf.select(node, head, throw_on_resolution_failure=False)
            raw = node._get_node(parts[0])._value() if i == 1 else None
        except Exception:
            raw = None
        if isinstance(raw, str) and raw.startswith("${") and raw.endswith("}") and inner is not None:
            return ".".join([raw[2:-1], *tail])
    return f"{path}.{key}"


def _rate(key: str, value, hint: str) -> None:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} must be a number strictly between 0 and 1; {hint}") from None
    if not 0.0 < rate < 1.0:
        raise ConfigError(f"{key}={value!r} must be strictly between 0 and 1 (the share of remaining weights "
                          f"pruned per round); {hint}")


def validate_config(cfg: DictConfig, check_model: bool = True) -> None:
    """Raise :class:`ConfigError` for the first wrong setting of ``cfg``."""
    _positive_int("train.iterations", cfg.train.iterations)
    _positive_int("train.batch_size", cfg.train.batch_size)
    _positive_int("eval_every", cfg.eval_every)
    _positive_int("eval_batch_size", cfg.eval_batch_size)
    _positive_int("checkpoint_every", cfg.checkpoint_every)
    _positive_int("prune.rounds", cfg.prune.rounds)
    _positive_int("trainer.steps_per_call", cfg.trainer.get("steps_per_call", 1))
    rewind = cfg.rewind_iteration
    if not isinstance(rewind, int) or isinstance(rewind, bool) or not 0 <= rewind < int(cfg.train.iterations):
        raise ConfigError(
            f"rewind_iteration={rewind!r} must be an integer in [0, train.iterations={cfg.train.iterations}): "
            f"it is the iteration the survivors are reset to; lower it or raise train.iterations"
        )
    for key in ("lr_warmup", "mask_gradients"):
        if not isinstance(cfg.get(key, False), bool):
            raise ConfigError(f"{key}={cfg.get(key)!r} must be true or false")
    compile_ = cfg.optimizer.get("compile", False)
    if not isinstance(compile_, bool):
        raise ConfigError(f"optimizer.compile={compile_!r} must be true or false")
    if compile_:
        from lth.experiment import resolve_device
        from lth.pruning.compiled_optimizer import missing_compiler

        reason = missing_compiler(resolve_device(cfg.trainer))
        if reason:
            raise ConfigError(f"optimizer.compile=true needs a C++ compiler for torch.compile on the CPU: {reason}. "
                              f"Install one (e.g. g++) or set optimizer.compile=false")
    if cfg.strategy not in ("reset", "continue"):
        raise ConfigError(f"strategy={cfg.strategy!r} is not known; choose strategy=reset or strategy=continue")
    for c in cfg.controls:
        if c not in ("reinit", "random_prune"):
            raise ConfigError(f"controls contains {c!r}; choose from controls=[reinit,random_prune]")
    lr = cfg.optimizer.lr
    try:
        lr_ok = math.isfinite(float(lr)) and float(lr) > 0
    except (TypeError, ValueError):
        lr_ok = False
    if not lr_ok:
        raise ConfigError(f"optimizer.lr={lr!r} must be a positive number, e.g. optimizer.lr=1e-3")
    if cfg.lr_warmup:
        _positive_int("warmup.iterations", cfg.warmup.iterations)
    p = cfg.prune
    if p.scheme not in ("layerwise", "global"):
        raise ConfigError(f"prune.scheme={p.scheme!r} is not known; choose prune=layerwise or prune=global")
    if p.get("schedule", "iterative") not in ("iterative", "oneshot"):
        raise ConfigError(f"prune.schedule={p.schedule!r} is not known; choose prune.schedule=iterative or oneshot")
    if p.scheme == "global":
        key = _user_key(p, "rate", "prune")
        _rate(key, p.rate, f"set e.g. {key}=0.2")
    if check_model:
        check_model_fits_data(cfg)


def check_model_fits_data(cfg: DictConfig) -> None:
    """Build the model on the dataset's input shape, run one zero sample through it, check the rates.

    Uses the datamodule *class* (its ``input_shape`` and ``num_classes``), so no data is loaded.
    """
    import hydra.utils
    import torch

    from lth.models import build_model
    from lth.pruning import prunable_tensors
    from lth.pruning.prunable import is_exempt

    model_name = cfg.model.get("name", "?")
    try:
        dm_cls = hydra.utils.get_class(cfg.data._target_)
    except Exception as exc:
        raise ConfigError(f"data._target_={cfg.data.get('_target_')!r} cannot be imported ({exc}); "
                          f"choose one of the data= options") from None
    data_name = getattr(dm_cls, "name", cfg.data._target_)
    shape = getattr(dm_cls, "input_shape", None)
    classes = getattr(dm_cls, "num_classes", None)
    if not isinstance(shape, tuple) or not shape or not isinstance(classes, int):
        return  # the datamodule only knows its shape once loaded; Experiment.new_model will tell
    try:
        model = build_model(cfg.model.arch, shape, classes, int(cfg.seed))
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros((1, *shape)))
    except Exception as exc:
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
    if cfg.prune.scheme != "layerwise":
        return
    exempt = list(cfg.prune.get("exempt", []) or [])
    rates = cfg.prune.rates
    for kind in sorted({t.kind for t in prunable_tensors(model) if not is_exempt(t, exempt)}):
        key = _user_key(cfg.prune, f"rates.{kind}", "prune")
        if kind not in rates:
            raise ConfigError(f"prune.rates has no rate for the {kind} layers of model={model_name}; "
                              f"set +{key}=0.2")
        _rate(key, rates[kind], f"set e.g. {key}=0.2")


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
    """Before Hydra creates ``path``: its nearest existing ancestor is a folder this process can write."""
    path = Path(path).expanduser().absolute()
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.is_dir():
        try:
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
