"""The mask-aware optimizer hook keeps pruned weights exactly 0.0 for every optimizer."""

import pytest
import torch
import torch.nn.functional as F

from lth.models import LeNet
from lth.module import OptimizerSettings
from lth.pruning import Mask, MaskEnforcer, prune_layerwise

OPTIMIZERS = [
    OptimizerSettings("adam", lr=1e-2),
    OptimizerSettings("adam", lr=1e-2, weight_decay=1e-2),
    OptimizerSettings("adamw", lr=1e-2, weight_decay=0.1),
    OptimizerSettings("sgd", lr=0.1, momentum=0.9, weight_decay=1e-3),
    OptimizerSettings("sgd", lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True),
]


def _enforced(model, mask, settings):
    enforcer = MaskEnforcer(model, mask)
    opt = settings.build(enforcer.optimizer_params(model.parameters()))
    return enforcer.attach(opt), opt


@pytest.mark.parametrize("settings", OPTIMIZERS, ids=lambda s: f"{s.name}-wd{s.weight_decay}-n{s.nesterov}")
def test_pruned_weights_stay_exactly_zero_for_hundreds_of_steps(settings):
    torch.manual_seed(0)
    model = LeNet((1, 8, 8), 10, hidden=(64, 32))
    # Prune trained-looking weights, and do not zero them first: attaching must.
    dense_opt = settings.build(model.parameters())
    x, y = torch.randn(256, 1, 8, 8), torch.randint(0, 10, (256,))
    for _ in range(20):
        dense_opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        dense_opt.step()
    mask = prune_layerwise(Mask.dense(model), dict(model.named_parameters()),
                           {"hidden.0.weight": 0.8, "hidden.1.weight": 0.8, "output.weight": 0.5})
    enforcer, opt = _enforced(model, mask, settings)
    params = dict(model.named_parameters())
    for step in range(300):
        idx = torch.randint(0, 256, (32,))
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        if step % 50 == 0 or step == 299:
            for name, m in mask.items():
                assert torch.count_nonzero(params[name][~m]) == 0, (name, step)
    enforcer.verify()
    # survivors did train, and the optimizer holds state for survivors only
    assert any(torch.count_nonzero(params[n][m]) == int(m.sum()) for n, m in mask.items())
    sizes = sorted(t.numel() for st in opt.state.values() for t in st.values() if torch.is_tensor(t) and t.dim())
    assert int(mask["hidden.0.weight"].sum()) in sizes and mask["hidden.0.weight"].numel() not in sizes


def test_an_optimizer_over_the_dense_weights_is_refused():
    model = LeNet((1, 8, 8), 10, hidden=(16, 8))
    mask = prune_layerwise(Mask.dense(model), dict(model.named_parameters()), {"hidden.0.weight": 0.5})
    with pytest.raises(ValueError, match="optimizer_params"):
        MaskEnforcer(model, mask).attach(torch.optim.SGD(model.parameters(), lr=0.1))


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


def _masked_copy(seed=1):
    torch.manual_seed(seed)
    model = LeNet((1, 8, 8), 10, hidden=(64, 32))
    mask = prune_layerwise(Mask.dense(model), dict(model.named_parameters()),
                           {"hidden.0.weight": 0.8, "hidden.1.weight": 0.8, "output.weight": 0.5})
    mask.apply_(model)
    return model, mask


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
@pytest.mark.parametrize("settings", OPTIMIZERS, ids=lambda s: f"{s.name}-wd{s.weight_decay}-n{s.nesterov}")
def test_survivors_train_exactly_as_with_masked_gradients_and_weights(settings, fused, monkeypatch):
    """The survivors-only optimizer gives what DESIGN.md's dense recipe gives (zero the pruned
    gradients before each step, multiply the mask into the weights after it): bit for bit with
    torch's multi-tensor optimizers. The fused CPU kernels round an entry slightly differently
    (a last bit) depending on where it falls in the tensor (vector body or scalar remainder of
    each block), and a survivor's place differs between the dense and the compact tensor; those
    last-bit differences then spread through training without growing."""
    if not fused:
        monkeypatch.setattr("lth.module.FUSED_DEVICES", ())
    x, y = torch.randn(256, 1, 8, 8), torch.randint(0, 10, (256,))
    runs = []
    for compact in (True, False):
        model, mask = _masked_copy()
        params = dict(model.named_parameters())
        if compact:
            _, opt = _enforced(model, mask, settings)
        else:
            opt = settings.build(model.parameters())
        gen = torch.Generator().manual_seed(0)
        for _ in range(100):
            idx = torch.randint(0, 256, (32,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            if not compact:
                for n, m in mask.items():
                    params[n].grad.mul_(m)
            opt.step()
            if not compact:
                mask.apply_(model)
        runs.append(model.state_dict())
    for name in runs[0]:
        if fused:
            torch.testing.assert_close(runs[0][name], runs[1][name], rtol=0, atol=2e-6, msg=name)
        else:
            assert torch.equal(runs[0][name], runs[1][name]), name


def test_gradients_computed_inside_a_closure_reach_the_survivors():
    """Lightning's automatic optimization computes gradients inside ``step(closure)``, after step
    pre-hooks have run: the hook must gather what the closure produces."""
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    model, mask = _masked_copy()
    enforcer, opt = _enforced(model, mask, OptimizerSettings("sgd", lr=0.1))
    before = model.hidden[0].weight.detach().clone()

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    m = mask["hidden.0.weight"]
    assert torch.count_nonzero(model.hidden[0].weight[m] - before[m]) > 0.9 * int(m.sum())
    assert torch.count_nonzero(model.hidden[0].weight[~m]) == 0
    assert model.hidden[0].weight.grad is None  # dropped once gathered


def test_dense_optimizer_state_of_an_older_checkpoint_is_cut_to_the_survivors():
    model, mask = _masked_copy()
    dense = OptimizerSettings("adam", lr=1e-2).build(model.parameters())
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    dense.step()
    named = list(model.named_parameters())
    state = MaskEnforcer.compact_optimizer_state(dense.state_dict(), named, mask)
    enforcer, opt = _enforced(model, mask, OptimizerSettings("adam", lr=1e-2))
    opt.load_state_dict(state)
    i = [n for n, _ in named].index("hidden.0.weight")
    m = mask["hidden.0.weight"]
    assert torch.equal(opt.state[enforcer.survivors[0]]["exp_avg"], dense.state[named[i][1]]["exp_avg"][m])
    assert opt.state[opt.param_groups[0]["params"][i + 1]]["exp_avg"].shape == model.hidden[0].bias.shape


def test_verify_raises_when_a_pruned_weight_is_not_zero():
    model, mask = _masked_copy()
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


def test_lottery_module_resumes_an_older_checkpoints_dense_optimizer_state():
    from lth.module import LotteryModule
    from lth.schedule import LRSchedule

    model, mask = _masked_copy()
    x = torch.randn(4, 1, 8, 8)
    dense = OptimizerSettings("adam", lr=1e-2).build(model.parameters())
    model(x).sum().backward()
    dense.step()
    checkpoint = {"optimizer_states": [dense.state_dict()]}
    module = LotteryModule(model, mask, OptimizerSettings("adam", lr=1e-2), LRSchedule(), 0, 10)
    module.on_load_checkpoint(checkpoint)
    opt = module.configure_optimizers()
    opt.load_state_dict(checkpoint["optimizer_states"][0])
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()  # shapes agree: the fused kernel would refuse dense moments for compact parameters
    assert opt.state[module.enforcer.survivors[0]]["step"].item() == 2
    assert torch.count_nonzero(model.hidden[0].weight[~mask["hidden.0.weight"]]) == 0
