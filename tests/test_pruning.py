"""Magnitude pruning: exact counts, compounding rates, global threshold and exemptions, controls."""

import math

import pytest
import torch

from lth.models import LeNet
from lth.pruning import Mask, prunable_tensors, prune_global, prune_layerwise, random_mask_like
from lth.pruning.magnitude import prune_count
from lth.pruning.prunable import is_exempt


def lenet():
    torch.manual_seed(0)
    return LeNet((1, 28, 28), 10)


def weights(model):
    return {n: p.detach() for n, p in model.named_parameters()}


def test_prunable_tensors_are_conv_and_linear_weights_only():
    tensors = prunable_tensors(lenet())
    assert [(t.name, t.kind, t.numel) for t in tensors] == [
        ("hidden.0.weight", "fc", 784 * 300),
        ("hidden.1.weight", "fc", 300 * 100),
        ("output.weight", "output", 100 * 10),
    ]


def test_layerwise_exact_surviving_counts_after_n_rounds():
    model = lenet()
    rates = {"hidden.0.weight": 0.2, "hidden.1.weight": 0.2, "output.weight": 0.1}
    mask = Mask.dense(model)
    expected = {n: m.numel() for n, m in mask.items()}
    gen = torch.Generator().manual_seed(1)
    for _ in range(7):
        # fresh "trained" weights each round, as IMP would see
        w = {n: torch.randn(m.shape, generator=gen) for n, m in mask.items()}
        mask = prune_layerwise(mask, w, rates)
        expected = {n: c - int(rates[n] * c + 0.5) for n, c in expected.items()}
        assert mask.remaining() == expected
    # the counts compound as (1 - p)^n to within rounding
    for n, c in expected.items():
        assert abs(c - mask[n].numel() * (1 - rates[n]) ** 7) <= 7
    assert expected == {"hidden.0.weight": 49325, "hidden.1.weight": 6291, "output.weight": 478}


def test_layerwise_prunes_smallest_magnitudes_of_survivors_only():
    mask = Mask({"w": torch.tensor([True, True, False, True, True])})
    w = {"w": torch.tensor([0.5, -0.1, 0.0, 2.0, -0.3])}
    new = prune_layerwise(mask, w, {"w": 0.5})  # 2 of the 4 alive
    assert new["w"].tolist() == [True, False, False, True, False]


def test_ties_are_broken_by_position_and_count_is_exact():
    mask = Mask({"a": torch.ones(4, dtype=torch.bool), "b": torch.ones(4, dtype=torch.bool)})
    w = {"a": torch.ones(4), "b": torch.ones(4)}
    new = prune_global(mask, w, 0.25, ["a", "b"])
    assert sum(new.remaining().values()) == 6
    assert new["a"].tolist() == [False, False, True, True] and new["b"].all()


def test_global_removes_exact_count_under_one_threshold_and_spares_exempt():
    model = lenet()
    tensors = prunable_tensors(model)
    names = [t.name for t in tensors if not is_exempt(t, ["output"])]
    mask = Mask.dense(model)
    w = weights(model)
    for round_ in range(3):
        alive = sum(mask[n].sum().item() for n in names)
        new = prune_global(mask, w, 0.2, names)
        assert alive - sum(new[n].sum().item() for n in names) == prune_count(0.2, alive)
        assert new["output.weight"].all()  # exempt tensor untouched
        # one threshold: every pruned weight is no larger than every surviving one
        pruned = torch.cat([w[n][mask[n] & ~new[n]].abs() for n in names])
        kept = torch.cat([w[n][new[n]].abs() for n in names])
        assert pruned.max() <= kept.min()
        mask = new
    assert math.isclose(sum(mask[n].sum().item() for n in names) / sum(mask[n].numel() for n in names), 0.8**3, rel_tol=1e-4)


def test_exemption_by_glob():
    t = prunable_tensors(lenet())[0]
    assert is_exempt(t, ["hidden.0.*"]) and not is_exempt(t, ["*shortcut*", "output"])


def test_random_prune_control_keeps_per_layer_counts():
    model = lenet()
    mask = prune_layerwise(Mask.dense(model), weights(model), {"hidden.0.weight": 0.5, "output.weight": 0.3})
    rnd = random_mask_like(mask, seed=3)
    assert rnd.remaining() == mask.remaining()
    assert not torch.equal(rnd["hidden.0.weight"], mask["hidden.0.weight"])
    assert torch.equal(random_mask_like(mask, seed=3)["hidden.0.weight"], rnd["hidden.0.weight"])


def test_mask_save_load_roundtrip(tmp_path):
    mask = prune_layerwise(Mask.dense(lenet()), weights(lenet()), {"hidden.1.weight": 0.3})
    mask.save(tmp_path / "m.pt")
    back = Mask.load(tmp_path / "m.pt")
    assert all(torch.equal(back[n], mask[n]) for n in mask)
    assert back.weights_remaining() == pytest.approx(mask.weights_remaining())


def test_selection_matches_a_stable_sort_on_tie_heavy_scores():
    from lth.pruning.magnitude import _smallest_alive

    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(1, 300, (1,), generator=gen))
        scores = torch.randint(0, 6, (n,), generator=gen).float()  # many ties
        alive = torch.rand(n, generator=gen) > 0.3
        k = int(torch.randint(0, int(alive.sum()) + 1, (1,), generator=gen))
        idx = alive.nonzero().squeeze(1)
        expected = torch.zeros_like(alive)
        expected[idx[torch.sort(scores[idx], stable=True).indices[:k]]] = True
        assert torch.equal(_smallest_alive(scores, alive, k), expected)
