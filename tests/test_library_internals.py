"""The private internals of torch and Lightning that lth relies on for speed (BENCHMARKS.md), each
checked here so that an upgrade that removes one fails loudly instead of silently losing the gain
or breaking a run. Each patch lives in one place: src/lth/training/module.py (the capture check,
``_current_fx_name``) and src/lth/training/lean_trainer.py (the profiler, ``state_key``)."""

import inspect

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.profilers import PassThroughProfiler

from lth.models import LeNet
from lth.training.module import OptimizerSettings, skip_capture_check


def test_torch_optimizers_still_run_the_capture_health_check_that_lth_skips_on_cpu():
    assert hasattr(torch.optim.Optimizer, "_accelerator_graph_capture_health_check"), (
        "torch removed Optimizer._accelerator_graph_capture_health_check: drop skip_capture_check in "
        "lth/training/module.py")
    for name in ("adam", "adamw"):  # still called by their step() (through the instance attribute lth replaces)
        model = LeNet((1, 4, 4), 3)
        opt = OptimizerSettings(name=name).build(model.parameters())
        calls = []
        opt._accelerator_graph_capture_health_check = lambda: calls.append(1)
        model(torch.zeros(2, 1, 4, 4)).sum().backward()
        opt.step()
        assert calls, f"torch.optim {name} no longer calls _accelerator_graph_capture_health_check in step()"
    opt = OptimizerSettings().build(LeNet((1, 4, 4), 3).parameters())
    skip_capture_check(opt)
    assert opt._accelerator_graph_capture_health_check() is None


def test_lightning_still_sets_current_fx_name_on_the_module():
    assert "_current_fx_name" in vars(pl.LightningModule()), (
        "Lightning no longer sets LightningModule._current_fx_name: drop LotteryModule.__setattr__'s shortcut")


def test_lightning_still_profiles_through_profiler_profile_and_checkpoint_state_key_is_a_property():
    assert callable(getattr(PassThroughProfiler, "profile", None))
    assert isinstance(inspect.getattr_static(ModelCheckpoint, "state_key"), property)
