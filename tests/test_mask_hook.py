"""The mask-aware optimizer hook keeps pruned weights exactly 0.0 for every optimizer."""

import pytest
import torch
import torch.nn.functional as F

from lth.models import LeNet
from lth.training.module import OptimizerSettings
from lth.pruning import Mask, MaskEnforcer, prune_layerwise

OPTIMIZERS = [
    OptimizerSettings("adam", lr=1e-2),
    OptimizerSettings("adam", lr=1e-2, weight_decay=1e-2),
    OptimizerSettings("adamw", lr=1e-2, weight_decay=0.1),
    OptimizerSettings("sgd", lr=0.1, momentum=0.9, weight_decay=1e-3),
    OptimizerSettings("sgd", lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True),
]


@pytest.mark.parametrize("settings", OPTIMIZERS, ids=lambda s: f"{s.name}-wd{s.weight_decay}-n{s.nesterov}")
def test_pruned_weights_stay_exactly_zero_for_hundreds_of_steps(settings):
    torch.manual_seed(0)
    model = LeNet((1, 8, 8), 10, hidden=(64, 32))
    # Start from trained-looking weights with pruned entries NOT zero, and momentum built up
    # before pruning: the hook must still hold them at exactly 0.0.
    opt = settings.build(model.parameters())
    x, y = torch.randn(256, 1, 8, 8), torch.randint(0, 10, (256,))
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    mask = prune_layerwise(Mask.dense(model), dict(model.named_parameters()),
                           {"hidden.0.weight": 0.8, "hidden.1.weight": 0.8, "output.weight": 0.5})
    mask.apply_(model)
    MaskEnforcer(model, mask).attach(opt)
    params = dict(model.named_parameters())
    for step in range(300):
        idx = torch.randint(0, 256, (32,))
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        if step % 50 == 0 or step == 299:
            for name, m in mask.items():
                assert torch.count_nonzero(params[name][~m]) == 0, (name, step)
    # survivors did train
    assert any(torch.count_nonzero(params[n][m]) == int(m.sum()) for n, m in mask.items())


def test_without_the_hook_the_same_setup_revives_pruned_weights():
    """Guards the test above: momentum/weight decay really would move pruned weights."""
    torch.manual_seed(0)
    model = LeNet((1, 8, 8), 10, hidden=(64, 32))
    opt = OptimizerSettings("sgd", lr=0.1, momentum=0.9, weight_decay=1e-3).build(model.parameters())
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    mask = prune_layerwise(Mask.dense(model), dict(model.named_parameters()), {"hidden.0.weight": 0.5})
    mask.apply_(model)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    assert torch.count_nonzero(model.hidden[0].weight[~mask["hidden.0.weight"]]) > 0


def _two_copies(settings, mask_gradients):
    torch.manual_seed(1)
    model = LeNet((1, 8, 8), 10, hidden=(64, 32))
    mask = prune_layerwise(Mask.dense(model), dict(model.named_parameters()),
                           {"hidden.0.weight": 0.8, "hidden.1.weight": 0.8, "output.weight": 0.5})
    mask.apply_(model)
    opt = settings.build(model.parameters())
    MaskEnforcer(model, mask, mask_gradients=mask_gradients).attach(opt)
    return model, mask, opt


@pytest.mark.parametrize("settings", OPTIMIZERS, ids=lambda s: f"{s.name}-wd{s.weight_decay}-n{s.nesterov}")
def test_weight_pass_alone_gives_survivors_bit_identical_to_also_masking_gradients(settings):
    """The default (mask re-applied after each step) trains the survivors exactly as if the pruned
    weights did not exist, which is what zeroing their gradients as well would give."""
    x, y = torch.randn(256, 1, 8, 8), torch.randint(0, 10, (256,))
    runs = []
    for mask_gradients in (False, True):
        model, mask, opt = _two_copies(settings, mask_gradients)
        gen = torch.Generator().manual_seed(0)
        for _ in range(100):
            idx = torch.randint(0, 256, (32,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        runs.append(model.state_dict())
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name


def test_mask_gradients_reaches_gradients_computed_inside_a_closure():
    """Lightning's automatic optimization computes gradients inside ``step(closure)``, after step
    pre-hooks have run: the hook must mask what the closure produces, or Adam's moments fill up."""
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    moments = {}
    for mask_gradients in (True, False):
        model, mask, opt = _two_copies(OptimizerSettings("adam", lr=1e-2), mask_gradients)

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        for _ in range(5):
            opt.step(closure)
        params = dict(model.named_parameters())
        moments[mask_gradients] = sum(int(torch.count_nonzero(opt.state[params[n]]["exp_avg"][~m]))
                                      for n, m in mask.items())
        for n, m in mask.items():
            assert torch.count_nonzero(params[n][~m]) == 0
    assert moments[True] == 0  # gradients masked: no optimizer state for pruned weights
    assert moments[False] > 0  # guard: without it the closure's gradients do reach Adam


def test_verify_raises_when_a_pruned_weight_is_not_zero():
    model, mask, opt = _two_copies(OptimizerSettings("sgd", lr=0.1), False)
    enforcer = MaskEnforcer(model, mask)
    enforcer.verify()
    with torch.no_grad():
        model.hidden[0].weight[~mask["hidden.0.weight"]] = 0.5
    with pytest.raises(RuntimeError, match="pruned weights of hidden.0.weight are no longer 0"):
        enforcer.verify()


def test_optimizers_use_the_fused_implementation_where_available():
    params = list(LeNet((1, 8, 8), 10, hidden=(8, 8)).parameters())
    elsewhere = [torch.nn.Parameter(torch.empty(3, device="meta"))]  # a device without fused kernels
    for settings in OPTIMIZERS:
        assert settings.build(params).defaults["fused"] is True, settings
        opt = settings.build(elsewhere)
        assert not opt.defaults["fused"] and opt.defaults["foreach"] is True, settings
