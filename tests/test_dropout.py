"""model.dropout: off by default (no module, same weights), on with model.dropout=P (paper Section 4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth.models import ConvNet, LeNet, build_model
from lth.models.init import glorot_gaussian_
from tests.conftest import compose_config

SHAPES = {"lenet300_100": (1, 28, 28), "conv2": (3, 32, 32), "conv4": (3, 32, 32), "conv6": (3, 32, 32)}


def n_dropout(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Dropout) for m in model.modules())


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def reference_lenet(seed: int) -> dict:
    """LeNet-300-100 as it was built before dropout existed: same layers, same init order."""
    torch.manual_seed(seed)
    ref = nn.Module()
    ref.hidden = nn.ModuleList([nn.Linear(784, 300), nn.Linear(300, 100)])
    ref.output = nn.Linear(100, 10)
    glorot_gaussian_(ref)
    return ref.state_dict()


def reference_conv2(seed: int) -> dict:
    torch.manual_seed(seed)
    ref = nn.Module()
    ref.features = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
    )
    ref.hidden = nn.ModuleList([nn.Linear(64 * 16 * 16, 256), nn.Linear(256, 256)])
    ref.output = nn.Linear(256, 10)
    glorot_gaussian_(ref)
    return ref.state_dict()


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", list(SHAPES))
def test_default_config_builds_no_dropout(name):
    cfg = compose_config([f"model={name}"])
    assert cfg.model.dropout == 0.0 and cfg.model.arch.dropout == 0.0
    model = build_model(cfg.model.arch, SHAPES[name], 10, seed=0)
    assert n_dropout(model) == 0


def test_default_initial_weights_are_unchanged():
    cfg = compose_config(["model=lenet300_100"])
    assert same_state(build_model(cfg.model.arch, (1, 28, 28), 10, seed=3).state_dict(), reference_lenet(3))
    torch.manual_seed(4)
    assert same_state(ConvNet((3, 32, 32), 10, depth=2).state_dict(), reference_conv2(4))


@pytest.mark.parametrize("cls, shape, kwargs", [(LeNet, (1, 28, 28), {}), (ConvNet, (3, 32, 32), {"depth": 4})])
def test_dropout_changes_no_parameter(cls, shape, kwargs):
    torch.manual_seed(0)
    plain = cls(shape, 10, **kwargs)
    torch.manual_seed(0)
    dropped = cls(shape, 10, dropout=0.5, **kwargs)
    assert n_params(dropped) == n_params(plain)
    assert same_state(dropped.state_dict(), plain.state_dict())  # same seed, same initial weights
    assert n_dropout(dropped) == 1 and n_dropout(plain) == 0
    with pytest.raises(ValueError):
        cls(shape, 10, dropout=1.0, **kwargs)


@pytest.mark.parametrize("name", ["lenet300_100", "conv2"])
def test_model_dropout_override_composes_into_a_dropout_model(name):
    cfg = compose_config([f"model={name}", "model.dropout=0.5"])
    assert cfg.model.arch.dropout == 0.5
    shape = SHAPES[name]
    model = build_model(cfg.model.arch, shape, 10, seed=0)
    plain = build_model(compose_config([f"model={name}"]).model.arch, shape, 10, seed=0)
    assert n_dropout(model) == 1 and n_params(model) == n_params(plain)
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
    model.train()
    torch.manual_seed(0)
    train_out = model(x)
    model.eval()
    with torch.no_grad():
        eval_out = model(x)
        assert not torch.allclose(train_out, eval_out)
        assert torch.equal(eval_out, plain.eval()(x))  # dropout is the identity in eval mode


def _inputs(model: nn.Module, layers: list[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone())) for m in layers]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def _is_dropout_of(dropped: torch.Tensor, clean: torch.Tensor, p: float) -> bool:
    """Every entry is either dropped (0) or kept and scaled by 1/(1-p); some live ones are dropped."""
    kept = dropped != 0
    scaled_ok = torch.allclose(dropped[kept], clean[kept] / (1 - p))
    return bool(scaled_ok and ((clean != 0) & ~kept).any())


def test_dropout_acts_on_hidden_fc_activations_only():
    torch.manual_seed(0)
    model = LeNet((4,), 3, hidden=(50, 60), dropout=0.5).train()
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    first, second, out = _inputs(model, [model.hidden[0], model.hidden[1], model.output], x)
    assert torch.equal(first, x)  # the input itself is never dropped
    with torch.no_grad():
        assert _is_dropout_of(second, torch.relu(model.hidden[0](x)), 0.5)
        assert _is_dropout_of(out, torch.relu(model.hidden[1](second)), 0.5)

    conv = ConvNet((3, 8, 8), 10, depth=2, hidden=(40, 40), dropout=0.5).train()
    x = torch.randn(4, 3, 8, 8)
    first, second = _inputs(conv, [conv.hidden[0], conv.hidden[1]], x)
    with torch.no_grad():
        assert torch.equal(first, conv.features(x).flatten(1))  # conv features are not dropped
        assert _is_dropout_of(second, torch.relu(conv.hidden[0](first)), 0.5)
