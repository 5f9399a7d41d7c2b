"""Pruning at initialization (lth.analysis.pruning_at_init): scores by hand, masks, sanity checks.

The reference values are written out analytically for a two-layer linear network
``f(x) = W2 W1 x`` (no biases), not computed with the autograd path under test: the gradient
by its matrix formula, GraSP's Hessian-gradient product as a central finite difference of that
formula (float64), SynFlow's score from ``R = 1ᵀ|W2||W1|1``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth.analysis.pruning_at_init import (
    GRASP_TEMPERATURE,
    SYNFLOW_ITERATIONS,
    grasp_scores,
    magnitude_scores,
    mask_from_scores,
    pruning_at_init_mask,
    reinit_survivors,
    shuffle_within_layers,
    snip_scores,
    synflow_mask,
    synflow_scores,
)
from lth.models import ConvNet, LeNet
from lth.pruning import Mask, prunable_tensors
from lth.pruning.prunable import is_exempt

NAMES = ["0.weight", "1.weight"]


def linear2(seed: int = 0, d: int = 3, h: int = 4, c: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h, bias=False), nn.Linear(h, c, bias=False)).double()


def data(seed: int, n: int = 6, d: int = 3, c: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, c, (n,), generator=g)


def analytic_grad(w1, w2, batches, temperature: float = 1.0):
    """Σ_batches ∂/∂W of mean CE(W2 W1 x / T): Δ = (softmax(Z) - Y) / (N T), gW2 = Δᵀ H, gW1 = (Δ W2)ᵀ X."""
    g1, g2 = torch.zeros_like(w1), torch.zeros_like(w2)
    for x, y in batches:
        hidden = x @ w1.T
        z = hidden @ w2.T / temperature
        delta = (torch.softmax(z, 1) - nn.functional.one_hot(y, z.shape[1]).double()) / (len(y) * temperature)
        g2 += delta.T @ hidden
        g1 += (delta @ w2).T @ x
    return g1, g2


def state_snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, model.training, [p.requires_grad for p in model.parameters()]


def assert_unchanged(model, snapshot):
    state, training, requires = snapshot
    now = model.state_dict()
    assert all(torch.equal(now[k], state[k]) for k in state)
    assert model.training == training
    assert [p.requires_grad for p in model.parameters()] == requires
    assert all(p.grad is None for p in model.parameters())


# ----------------------------------------------------------------------------- scores by hand
def test_snip_scores_match_the_formula():
    model = linear2()
    batches = [data(1), data(2)]
    w1, w2 = model[0].weight.detach(), model[1].weight.detach()
    g1, g2 = analytic_grad(w1, w2, batches)
    scores = snip_scores(model, NAMES, batches)
    assert torch.allclose(scores["0.weight"], (g1 * w1).abs(), rtol=1e-10, atol=1e-14)
    assert torch.allclose(scores["1.weight"], (g2 * w2).abs(), rtol=1e-10, atol=1e-14)


def test_grasp_scores_match_theta_times_hessian_gradient():
    model = linear2()
    batches = [data(1), data(2)]
    w1, w2 = model[0].weight.detach(), model[1].weight.detach()
    t = GRASP_TEMPERATURE
    assert t == 200.0
    g1, g2 = analytic_grad(w1, w2, batches, t)
    eps = 1e-3 * float(torch.cat([g1.flatten(), g2.flatten()]).norm()) ** -1  # a step of 1e-3 along g
    p1, p2 = analytic_grad(w1 + eps * g1, w2 + eps * g2, batches, t)
    m1, m2 = analytic_grad(w1 - eps * g1, w2 - eps * g2, batches, t)
    hg1, hg2 = (p1 - m1) / (2 * eps), (p2 - m2) / (2 * eps)
    scores = grasp_scores(model, NAMES, batches)
    # "higher = keep" is θ ⊙ Hg, the negation of the paper's S(-θ) = -θ ⊙ Hg (whose highest are removed)
    assert torch.allclose(scores["0.weight"], w1 * hg1, rtol=1e-5, atol=1e-14)
    assert torch.allclose(scores["1.weight"], w2 * hg2, rtol=1e-5, atol=1e-14)
    both = torch.cat([scores[n].flatten() for n in NAMES])
    assert (both > 0).any() and (both < 0).any()  # so the sign convention matters for the ranking


def test_synflow_scores_match_the_path_product():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False))
    a1, a2 = model[0].weight.detach().abs().double(), model[2].weight.detach().abs().double()
    names = ["0.weight", "2.weight"]
    scores = synflow_scores(model, names)  # input shape (3,) from the first Linear; no data
    # R = 1ᵀ |W2| |W1| 1: ∂R/∂|W2|_ij = (|W1| 1)_j, ∂R/∂|W1|_jk = (1ᵀ |W2|)_j
    assert torch.allclose(scores["2.weight"], a2 * a1.sum(1)[None, :], rtol=1e-12)
    assert torch.allclose(scores["0.weight"], a1 * a2.sum(0)[:, None], rtol=1e-12)
    assert scores["0.weight"].dtype == torch.float64
    # the conservation law of Tanaka et al.: each layer's scores sum to R
    r = float(a2.sum(0) @ a1.sum(1))
    assert float(scores["0.weight"].sum()) == pytest.approx(r) == pytest.approx(float(scores["2.weight"].sum()))


def test_magnitude_scores():
    model = linear2()
    scores = magnitude_scores(model, NAMES)
    assert torch.equal(scores["1.weight"], model[1].weight.detach().abs())


# ----------------------------------------------------------------------------- masks
def small_lenet(seed: int = 0) -> LeNet:
    torch.manual_seed(seed)
    return LeNet((1, 4, 4), 3, hidden=(12, 8))


def lenet_setup():
    model = small_lenet()
    tensors = prunable_tensors(model)
    names = [t.name for t in tensors if not is_exempt(t, ["output"])]
    base = Mask.dense(model)
    out = "output.weight"
    base[out] = torch.rand(base[out].shape, generator=torch.Generator().manual_seed(5)) > 0.5  # not all-dense
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(10, 1, 4, 4, generator=g), torch.randint(0, 3, (10,), generator=g)) for _ in range(2)]
    return model, names, base, batches


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow", "magnitude_init"])
@pytest.mark.parametrize("invert", [False, True])
def test_masks_have_exactly_keep_survivors_and_keep_exempt_tensors(method, invert):
    model, names, base, batches = lenet_setup()
    snapshot = state_snapshot(model)
    keep = 37
    mask = pruning_at_init_mask(
        method, model, names, keep, base, batches if method in ("snip", "grasp") else None, invert=invert, iterations=5
    )
    assert sum(int(mask[n].sum()) for n in names) == keep
    assert torch.equal(mask["output.weight"], base["output.weight"])
    assert set(mask) == set(base)
    assert_unchanged(model, snapshot)


def test_scoring_leaves_the_model_unchanged_in_train_and_eval_mode():
    model, names, base, batches = lenet_setup()
    for mode in (True, False):
        model.train(mode)
        snapshot = state_snapshot(model)
        snip_scores(model, names, batches)
        grasp_scores(model, names, batches)
        synflow_scores(model, names)
        synflow_mask(model, names, 50, iterations=3)
        assert_unchanged(model, snapshot)
    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))
    snapshot = state_snapshot(bn)
    x = torch.randn(8, 1, 4, 4)
    pruning_at_init_mask("snip", bn, ["0.weight", "4.weight"], 20, Mask.dense(bn), [(x, torch.zeros(8, dtype=torch.long))])
    pruning_at_init_mask("synflow", bn, ["0.weight", "4.weight"], 20, Mask.dense(bn), input_shape=(1, 4, 4), iterations=3)
    assert_unchanged(bn, snapshot)  # BatchNorm running statistics untouched too


def test_snip_and_grasp_need_batches():
    model, names, base, _ = lenet_setup()
    for method in ("snip", "grasp"):
        with pytest.raises(ValueError):
            pruning_at_init_mask(method, model, names, 10, base, None)
    with pytest.raises(ValueError):
        pruning_at_init_mask("nope", model, names, 10, base)


def test_synflow_is_data_free():
    model, names, base, _ = lenet_setup()
    no_data = pruning_at_init_mask("synflow", model, names, 40, base, None, iterations=4)
    g = torch.Generator().manual_seed(9)
    for scale in (1.0, 100.0):
        other = [(scale * torch.randn(5, 1, 4, 4, generator=g), torch.randint(0, 3, (5,), generator=g))]
        with_data = pruning_at_init_mask("synflow", model, names, 40, base, other, iterations=4)
        assert all(torch.equal(no_data[n], with_data[n]) for n in base)
    conv = ConvNet((3, 8, 8), 10, depth=2, hidden=(16, 16))  # input shape from the model's attribute
    mask = pruning_at_init_mask("synflow", conv, [t.name for t in prunable_tensors(conv)], 500, Mask.dense(conv), iterations=3)
    assert sum(int(m.sum()) for m in mask.values()) == 500


def test_synflow_schedule_single_iteration_is_one_shot():
    model, names, base, _ = lenet_setup()
    one = synflow_mask(model, names, 30, iterations=1, base=base)
    scores = synflow_scores(model, names, mask=base)
    assert all(torch.equal(one[n], mask_from_scores(scores, 30, base)[n]) for n in base)
    assert SYNFLOW_ITERATIONS == 100


def test_synflow_iterations_rescore_the_pruned_network():
    """Iterative SynFlow re-scores after each pruning step: on this LeNet at ~1% density the
    100-step mask leaves every layer some weights, the one-shot mask prunes whole layers
    (the layer collapse that SynFlow's iterations avoid, Tanaka et al. 2020)."""
    torch.manual_seed(0)
    model = LeNet((1, 8, 8), 10, hidden=(64, 32))
    names = [t.name for t in prunable_tensors(model)]
    keep = 60
    iterative = synflow_mask(model, names, keep, iterations=SYNFLOW_ITERATIONS)
    one_shot = synflow_mask(model, names, keep, iterations=1)
    assert any(not torch.equal(iterative[n], one_shot[n]) for n in names)
    assert all(int(iterative[n].sum()) > 0 for n in names)
    assert any(int(one_shot[n].sum()) == 0 for n in names)  # one shot collapses a layer here


def test_mask_from_scores_keeps_the_highest_and_inverted_the_lowest():
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(20, generator=g).double()  # distinct scores
    scores = {"a": perm[:8].view(2, 4), "b": perm[8:].view(3, 4)}
    base = Mask({n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()})
    base["exempt"] = torch.tensor([True, False, True])
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = 7
    top = mask_from_scores(scores, k, base)
    kept = torch.cat([top[n].flatten() for n in scores])
    assert set(flat[kept].tolist()) == set(range(20 - k, 20))
    low = mask_from_scores(scores, k, base, invert=True)
    kept_low = torch.cat([low[n].flatten() for n in scores])
    assert set(flat[kept_low].tolist()) == set(range(k))  # the k lowest...
    complement = mask_from_scores(scores, 20 - k, base)  # ...i.e. the complement of the top-(n-k)
    assert all(torch.equal(low[n], ~complement[n]) for n in scores)
    assert torch.equal(low["exempt"], base["exempt"]) and torch.equal(top["exempt"], base["exempt"])


def test_mask_from_scores_ties_counts_and_alive_restriction():
    scores = {"w": torch.zeros(5)}
    base = Mask({"w": torch.ones(5, dtype=torch.bool)})
    assert mask_from_scores(scores, 3, base)["w"].tolist() == [False, False, True, True, True]  # earliest lose ties
    assert mask_from_scores(scores, 3, base, invert=True)["w"].tolist() == [False, False, True, True, True]
    base = Mask({"w": torch.tensor([True, False, True, True, False])})
    best_dead = {"w": torch.tensor([1.0, 9.0, 2.0, 3.0, 8.0])}  # dead weights are never revived
    assert mask_from_scores(best_dead, 2, base)["w"].tolist() == [False, False, True, True, False]
    with pytest.raises(ValueError):
        mask_from_scores(best_dead, 4, base)  # only 3 alive
    with pytest.raises(ValueError):
        mask_from_scores({"w": torch.tensor([float("nan")] * 5)}, 1, base)


# ----------------------------------------------------------------------------- sanity checks
def test_shuffle_within_layers_keeps_counts_and_moves_weights():
    g = torch.Generator().manual_seed(0)
    mask = Mask({"a": torch.rand(8, 16, generator=g) > 0.5, "b": torch.rand(10, 8, generator=g) > 0.8, "c": torch.rand(6, generator=g) > 0.5})
    shuffled = shuffle_within_layers(mask, seed=1, names=["a", "b"])
    assert shuffled.remaining() == mask.remaining()
    assert not torch.equal(shuffled["a"], mask["a"]) and not torch.equal(shuffled["b"], mask["b"])
    assert torch.equal(shuffled["c"], mask["c"])  # not in names: unchanged
    again = shuffle_within_layers(mask, seed=1, names=["a", "b"])
    assert all(torch.equal(again[n], shuffled[n]) for n in mask)  # deterministic
    assert not torch.equal(shuffle_within_layers(mask, seed=2)["a"], shuffled["a"])
    assert shuffle_within_layers(mask, seed=1).remaining() == mask.remaining()


def test_reinit_survivors_draws_new_values_under_the_same_mask():
    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return LeNet((1, 4, 4), 3, hidden=(12, 8))

    ticket = build(0)
    mask = Mask.dense(ticket)
    mask["hidden.0.weight"] = torch.rand(12, 16, generator=torch.Generator().manual_seed(1)) > 0.5
    state = reinit_survivors(build, seed=7, mask=mask)
    fresh = build(7).state_dict()
    w = state["hidden.0.weight"]
    assert torch.equal(w, fresh["hidden.0.weight"] * mask["hidden.0.weight"])
    assert torch.equal(w != 0, mask["hidden.0.weight"])
    assert not torch.equal(w, ticket.state_dict()["hidden.0.weight"] * mask["hidden.0.weight"])
    assert set(state) == set(ticket.state_dict())
    assert torch.equal(reinit_survivors(build, seed=7)["output.weight"], fresh["output.weight"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_scores_on_cuda_match_cpu():
    model, names, base, batches = lenet_setup()
    cuda = small_lenet().cuda()
    cuda_batches = [(x.cuda(), y.cuda()) for x, y in batches]
    for fn in (snip_scores, grasp_scores):
        cpu_s, gpu_s = fn(model, names, batches), fn(cuda, names, cuda_batches)
        assert all(gpu_s[n].device.type == "cpu" and torch.allclose(gpu_s[n], cpu_s[n], rtol=1e-3, atol=1e-8) for n in names)
    cpu_m = synflow_mask(model, names, 40, iterations=5, base=base)
    gpu_m = synflow_mask(cuda, names, 40, iterations=5, base=base)
    assert sum(int(gpu_m[n].sum()) for n in names) == 40
    assert all(torch.equal(cpu_m[n], gpu_m[n]) for n in base)
    assert next(cuda.parameters()).is_cuda
