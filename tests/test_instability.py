"""Linear mode connectivity (lth.analysis.instability): interpolation, path errors, error barrier."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lth.analysis.instability import (
    PAPER_POINTS,
    error_barrier,
    interpolate_state,
    path_errors,
    recompute_batchnorm_stats,
)
from lth.models import LeNet
from lth.pruning import Mask
from lth.training.evaluation import evaluate


def xor_task(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g) * 1.5
    return x, ((x[:, 0] * x[:, 1]) > 0).long()


def trained_lenet(init_seed: int, x, y, steps: int = 200) -> LeNet:
    torch.manual_seed(init_seed)
    model = LeNet((2,), 2, hidden=(16, 16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_paper_defaults():
    import inspect

    params = inspect.signature(path_errors).parameters
    assert PAPER_POINTS == 30 and params["points"].default == 30
    assert params["bn"].default == "interpolate"


def test_interpolate_state_formula_and_integer_buffers():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, -2.0]), "n": torch.tensor(7)}
    mid = interpolate_state(a, b, 0.25)
    assert torch.allclose(mid["w"], torch.tensor([1.5, 1.0]))
    assert mid["n"].item() == 3 and mid["n"].dtype == torch.int64  # integer buffers from a
    assert torch.equal(interpolate_state(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate_state(a, b, 1.0)["w"], b["w"])
    with pytest.raises(ValueError):
        interpolate_state(a, {"w": b["w"]}, 0.5)


def test_identical_networks_have_zero_barrier():
    x, y = xor_task()
    model = trained_lenet(0, x, y, steps=50)
    state = model.state_dict()
    path = path_errors(model, state, state, x, y, points=7)
    assert [p["alpha"] for p in path] == pytest.approx([i / 6 for i in range(7)])
    assert error_barrier(path) == 0.0


def test_independent_networks_have_a_large_barrier():
    """Two LeNets from different initialisations solve XOR (ends ~0% error) in different basins."""
    x, y = xor_task()
    a, b = trained_lenet(0, x, y), trained_lenet(1, x, y)
    path = path_errors(a, a.state_dict(), b.state_dict(), x, y, points=11)
    assert path[0]["error"] < 0.02 and path[-1]["error"] < 0.02
    assert error_barrier(path) > 0.15  # the paper calls a network stable below 0.02


def test_ends_reproduce_each_networks_error_exactly():
    x, y = xor_task()
    a, b = trained_lenet(0, x, y, steps=30), trained_lenet(1, x, y, steps=60)
    path = path_errors(a, a.state_dict(), b.state_dict(), x, y, points=5, batch_size=100)
    for end, net in ((path[0], a), (path[-1], b)):
        loss, acc = evaluate(net, x, y, 100)
        assert end["error"] == 1.0 - acc
        assert end["loss"] == loss
    assert path[0]["error"] != path[-1]["error"] or path[0]["loss"] != path[-1]["loss"]


def test_barrier_by_hand_on_a_tiny_network():
    """f(x) = U·(w·x) + c: w -> -w and U -> -U is the same function, but the middle of the path is 0.

    Two ends ``w=1, U=[1,-1]`` and ``w=-1, U=[-1,1]`` (same bias c=[0, 0.1]) classify x=+1 as 0 and
    x=-1 as 1. On the path the logits are ``(1-2α)² [x, -x] + c``: at α=1/2 they are ``c`` for
    every input, so everything is class 1 and the error is the share of class 0.
    """
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 2))
    c = torch.tensor([0.0, 0.1])
    a = {"0.weight": torch.tensor([[1.0]]), "1.weight": torch.tensor([[1.0], [-1.0]]), "1.bias": c}
    b = {"0.weight": torch.tensor([[-1.0]]), "1.weight": torch.tensor([[-1.0], [1.0]]), "1.bias": c.clone()}
    xs = [1.0, 1.0, -1.0, -1.0, -1.0]
    ys = [0, 0, 1, 1, 1]
    x, y = torch.tensor(xs).unsqueeze(1), torch.tensor(ys)

    def by_hand(alpha: float) -> tuple[float, float]:
        s = (1 - 2 * alpha) ** 2
        wrong, loss = 0, 0.0
        for xi, yi in zip(xs, ys):
            z = (s * xi + 0.0, -s * xi + 0.1)
            pred = 0 if z[0] >= z[1] else 1
            wrong += pred != yi
            loss += math.log(math.exp(z[0]) + math.exp(z[1])) - z[yi]
        return wrong / len(xs), loss / len(xs)

    path = path_errors(model, a, b, x, y, points=5)
    hand = [by_hand(i / 4) for i in range(5)]
    assert [p["error"] for p in path] == [e for e, _ in hand] == [0.0, 0.0, 0.4, 0.0, 0.0]
    assert [p["loss"] for p in path] == pytest.approx([l for _, l in hand], rel=1e-5)
    errors = [e for e, _ in hand]
    assert error_barrier(path) == pytest.approx(max(errors) - (errors[0] + errors[-1]) / 2) == pytest.approx(0.4)
    assert error_barrier([0.1, 0.5, 0.3]) == pytest.approx(0.3)  # floats too; max minus mean of the ends
    assert error_barrier([0.1, 0.05, 0.3]) == pytest.approx(0.1)  # the larger end is on the path


def test_batchnorm_recompute_differs_from_interpolate_and_agrees_without_bn():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 3, generator=g), torch.randint(0, 3, (64,), generator=g)
    train_x = torch.randn(256, 3, generator=g) * 2 + 1
    a_net, b_net = bn_net(0), bn_net(1)
    for net in (a_net, b_net):  # give each end its own running statistics
        net.train()
        with torch.no_grad():
            for _ in range(5):
                net(torch.randn(32, 3, generator=g) * 3 - 1)
    a, b = a_net.state_dict(), b_net.state_dict()
    inter = path_errors(a_net, a, b, x, y, points=5, bn="interpolate")
    recomp = path_errors(a_net, a, b, x, y, points=5, bn="recompute", train_x=train_x, batch_size=64)
    assert [p["loss"] for p in inter] != pytest.approx([p["loss"] for p in recomp], rel=1e-3)
    with pytest.raises(ValueError):
        path_errors(a_net, a, b, x, y, bn="recompute")  # needs train_x
    with pytest.raises(ValueError):
        path_errors(a_net, a, b, x, y, bn="something")

    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3))
    pa = plain.state_dict()
    pb = {k: v + 0.3 * torch.randn_like(v) for k, v in pa.items()}
    assert path_errors(plain, pa, pb, x, y, points=5) == path_errors(
        plain, pa, pb, x, y, points=5, bn="recompute", train_x=train_x
    )


def test_recompute_estimates_the_statistics_of_train_x():
    net = bn_net(0)
    train_x = torch.randn(100, 3, generator=torch.Generator().manual_seed(2)) * 2 + 1
    recompute_batchnorm_stats(net, train_x, batch_size=100)
    pre = net[0](train_x).detach()
    bn = net[1]
    assert torch.allclose(bn.running_mean, pre.mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, pre.var(0, unbiased=True), rtol=1e-5)
    assert bn.momentum == 0.1 and not net.training


def test_model_is_left_as_it_was():
    a_net, b_net = bn_net(0), bn_net(1)
    a_net.train()
    before = {k: v.clone() for k, v in a_net.state_dict().items()}
    x, y = torch.randn(16, 3), torch.randint(0, 3, (16,))
    mask = Mask.dense(a_net)
    path_errors(a_net, b_net.state_dict(), b_net.state_dict(), x, y, points=3, bn="recompute", train_x=x, mask=mask)
    assert states_equal(a_net.state_dict(), before)
    assert a_net.training


def test_mask_is_applied_to_interpolated_networks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2))
    a = model.state_dict()
    b = {k: v * 2 for k, v in a.items()}
    x, y = torch.randn(32, 2), torch.randint(0, 2, (32,))
    mask = Mask({"0.weight": torch.zeros(2, 2, dtype=torch.bool)})  # only the bias is left
    path = path_errors(model, a, b, x, y, points=3, mask=mask)
    bias_only = nn.Sequential(nn.Linear(2, 2))
    bias_only.load_state_dict({"0.weight": torch.zeros(2, 2), "0.bias": a["0.bias"]})
    assert path[0]["loss"] == evaluate(bias_only, x, y, 1000)[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_path_errors_on_cuda_match_cpu():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 3, generator=g), torch.randint(0, 3, (64,), generator=g)
    a, b = bn_net(0).state_dict(), bn_net(1).state_dict()
    cpu = path_errors(bn_net(0), a, b, x, y, points=4, bn="recompute", train_x=x)
    gpu_model = bn_net(0).cuda()
    gpu = path_errors(gpu_model, a, b, x.cuda(), y.cuda(), points=4, bn="recompute", train_x=x.cuda())
    assert [p["error"] for p in gpu] == [p["error"] for p in cpu]
    assert [p["loss"] for p in gpu] == pytest.approx([p["loss"] for p in cpu], rel=1e-4)
    assert next(gpu_model.parameters()).is_cuda
