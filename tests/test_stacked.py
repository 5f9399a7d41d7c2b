"""Stacked training (``stack_networks``): each network of a stack trains as it would alone.

Proved in float64 on the CPU, where batched and single kernels differ only by rounding far below
the tolerance: the same masks at every level, the same data order, the same evaluation curve and
early-stopping choice, final weights within 1e-9, pruned weights exactly 0. The CUDA graph's
warm-up steps are undone exactly (``primed``), tested here on the CPU where the same code runs.
"""

from __future__ import annotations

import csv
import json
import math
import os

import pytest
import pytorch_lightning as pl
import torch

from lth.lottery import Lottery
from lth.pruning import Mask
from lth.storage import load_tensors
from lth.training.module import OptimizerSettings
from lth.training.stacked import StackedNetworks
from lth.training.stacked_steps import StackedSteps
from lth.training.stacked_graph import primed
from tests.conftest import FAST, compose_config

# LTH_TEST_TRAINER=gpu runs the same comparisons on a GPU (the stacked step then replayed from a CUDA graph).
TRAINER = os.environ.get("LTH_TEST_TRAINER", "cpu")
SMALL = ["experiment=quickstart", *[f"trainer={TRAINER}" if o == "trainer=cpu" else o for o in FAST], "train.iterations=30", "eval_every=5", "checkpoint_every=10",
         "trainer.steps_per_call=5", "prune.rounds=2", "controls=[reinit,random_prune]", "instability=true"]
TIMING = {"train_time_s", "time_s", "stacked"}


class Float64Lottery(Lottery):
    """The same experiment with every network and every split in float64."""

    def new_model(self, seed):
        return super().new_model(seed).double()

    def setup_data(self):
        fresh = self.datamodule is None
        dm = super().setup_data()
        if fresh:
            dm.splits = {k: (x.double(), y) for k, (x, y) in dm.splits.items()}
        return dm


class FirstBatches(pl.Callback):
    """The first batch of every Trainer (its folder, the batch's labels)."""

    def __init__(self):
        self.seen = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.seen[str(trainer.default_root_dir)] = batch[0][1].clone()


def run(folder, stack: bool, extra=(), lottery=Float64Lottery, callback=None, setup=None):
    # each run under its own parent: experiments beside each other share their dense round (lth.lottery.dense)
    lot = lottery(compose_config([*SMALL, f"stack_networks={str(stack).lower()}", *extra]), folder / "exp")
    if setup is not None:
        setup(lot)
    if callback is not None:
        lot.extra_callbacks.append(callback)
    return lot, lot.run()


def rows_by_key(rows):
    return {(r["round"], r["branch"]): r for r in rows}


def read_curve(path):
    with open(path) as f:
        return [{k: float(v) for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def close(a: float, b: float, key: str = "") -> bool:
    """Equal within 1e-9; evaluation losses within 1e-6: lth's evaluation takes the cross-entropy of
    float32 logits (``lth.training.evaluation.evaluate``), whose sum over a split the stacked
    evaluation adds in another order (float32 rounding, ~1e-7)."""
    tol = 1e-6 if key.endswith("val_loss") or key.endswith("test_loss") else 1e-9
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def assert_trained_as_alone(alone_lot, stack_lot, a: dict, s: dict, stack_sizes: dict, dense: int | None = 1) -> None:
    """Every row and curve of the stacked experiment is the one-at-a-time experiment's (the dense round
    a stack of one, ``dense=1``, or alone when it captures θK, ``dense=None``)."""
    for key, ra in a.items():
        rs = s[key]
        assert rs.get("stacked") == (dense if key == (0, "ticket") else stack_sizes[key[0]]), key
        assert "stacked" not in ra
        assert rs["es_iteration"] == ra["es_iteration"] and rs["diverged"] == ra["diverged"], key
        for k in ("min_val_loss", "test_acc_at_es", "final_test_acc", "final_val_loss"):
            assert close(rs[k], ra[k], k), (key, k, rs[k], ra[k])
        if "instability" in ra:
            assert close(rs["instability"], ra["instability"]), key
        folder = {b.name: b.key for b in stack_lot.branches}.get(key[1], key[1])  # instability-<settings digest>
        ca = read_curve(alone_lot.layout.curve(key[0], folder))
        cs = read_curve(stack_lot.layout.curve(key[0], folder))
        assert [p["iteration"] for p in ca] == [p["iteration"] for p in cs] and len(ca) >= 6
        assert all(close(pa[k], ps[k], k) for pa, ps in zip(ca, cs) for k in pa), key


@pytest.mark.slow
def test_a_stacked_level_trains_each_network_as_alone_in_float64(tmp_path):
    alone_lot, alone = run(tmp_path / "alone", stack=False)
    seen = FirstBatches()
    stack_lot, stacked = run(tmp_path / "stacked", stack=True, callback=seen)
    a, s = rows_by_key(alone), rows_by_key(stacked)
    assert a.keys() == s.keys() and len(a) == 2 + 4 + 4  # level 0: dense ticket + instability; 4 per pruned level
    assert_trained_as_alone(alone_lot, stack_lot, a, s, stack_sizes={0: 1, 1: 4, 2: 4})
    # the masks of every level (derived from the stacked tickets' trained weights) are the same
    for level in (1, 2):
        ma, ms = Mask.load(alone_lot.layout.ticket_mask(level)), Mask.load(stack_lot.layout.ticket_mask(level))
        assert all(torch.equal(ma[n], ms[n]) for n in ma), level
        ra = Mask.load(alone_lot.layout.branch_mask(level, "random_prune"))
        rs = Mask.load(stack_lot.layout.branch_mask(level, "random_prune"))
        assert all(torch.equal(ra[n], rs[n]) for n in ra)
    # final weights within 1e-9; pruned weights exactly 0
    keys = {b.name: b.key for b in stack_lot.branches}  # instability-<settings digest>
    for level in (0, 1, 2):
        for branch in ("ticket", "instability"):
            wa = load_tensors(alone_lot.layout.final(level, keys[branch]))
            ws = load_tensors(stack_lot.layout.final(level, keys[branch]))
            assert wa.keys() == ws.keys()
            for n in wa:
                assert ws[n].dtype == torch.float64 and float((wa[n] - ws[n]).abs().max()) <= 1e-9, (level, branch, n)
            mask = Mask.load(stack_lot.layout.ticket_mask(level))
            assert all(not ws[n][~mask[n]].any() for n in mask)
    # each network saw its own data order: the instability copy's first batch is its own seed's
    stream = stack_lot.datamodule.train_stream(60, stack_lot.branches[-1].data_seed(1), 30)
    labels = {k: v for k, v in seen.seen.items() if "/round_01/.stack-" in k}
    (batch,) = labels.values()
    order = [b.name for b in stack_lot.branches]
    assert torch.equal(batch[order.index("instability")], stream.batch(0)[1])
    assert torch.equal(batch[order.index("ticket")], stack_lot.datamodule.train_stream(60, 0, 30).batch(0)[1])
    assert not list(stack_lot.dir.rglob(".stack-*"))  # the stack's checkpoint folder is gone


@pytest.mark.slow
def test_warm_up_and_milestones_stacked_as_alone(tmp_path):
    """Rewound to iteration 5, the learning rate of every step follows the schedule from there (on a GPU:
    eager steps through the warm-up, a CUDA graph captured once the rate holds, after the milestone)."""
    extra = ["prune.rounds=1", "controls=[reinit]", "lr_warmup=true", "warmup.iterations=10", "schedule.milestones=[20]",
             "rewind_iteration=5"]
    alone_lot, alone = run(tmp_path / "alone", stack=False, extra=extra)
    stack_lot, stacked = run(tmp_path / "stacked", stack=True, extra=extra)
    a, s = rows_by_key(alone), rows_by_key(stacked)
    assert len(a) == 2 + 3
    assert_trained_as_alone(alone_lot, stack_lot, a, s, stack_sizes={0: 1, 1: 3}, dense=None)  # dense captures θ5
    curve = read_curve(stack_lot.layout.curve(1, "reinit"))
    lr = float(stack_lot.cfg.optimizer.lr)
    assert [p["iteration"] for p in curve] == [5, 10, 15, 20, 25, 30]
    assert [p["lr"] for p in curve] == pytest.approx([lr / 2, lr, lr, lr / 10, lr / 10, lr / 10])
    keys = {b.name: b.key for b in stack_lot.branches}  # instability-<settings digest>
    for branch in ("ticket", "instability"):
        wa, ws = (load_tensors(lot.layout.final(1, keys[branch])) for lot in (alone_lot, stack_lot))
        assert all(float((wa[n] - ws[n]).abs().max()) <= 1e-9 for n in wa), branch


@pytest.mark.slow
def test_a_diverging_network_is_recorded_as_alone_and_leaves_the_others_untouched(tmp_path):
    def poison(lot):  # the reinit control starts from a NaN output bias: its first loss is NaN
        reinit = next(b for b in lot.branches if b.name == "reinit")
        clean = reinit.start_state

        def start_state(level):
            state = dict(clean(level))
            state["output.bias"] = torch.full_like(state["output.bias"], float("nan"))
            return state

        reinit.start_state = start_state

    extra = ["prune.rounds=1", "instability=false", "controls=[reinit]"]
    _, alone = run(tmp_path / "alone", stack=False, extra=extra, setup=poison)
    _, stacked = run(tmp_path / "stacked", stack=True, extra=extra, setup=poison)
    a, s = rows_by_key(alone), rows_by_key(stacked)
    assert a[(1, "reinit")]["diverged"] and s[(1, "reinit")]["diverged"]
    assert s[(1, "reinit")]["diverged_reason"] == a[(1, "reinit")]["diverged_reason"]
    assert not s[(1, "ticket")]["diverged"] and s[(1, "ticket")]["stacked"] == 2
    assert s[(1, "ticket")]["es_iteration"] == a[(1, "ticket")]["es_iteration"]
    assert close(s[(1, "ticket")]["final_val_loss"], a[(1, "ticket")]["final_val_loss"], "final_val_loss")


class Interrupt(Exception):
    pass


class InterruptAt(pl.Callback):
    def __init__(self, at: int):
        self.at, self.fired = at, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if ".stack-" in str(trainer.default_root_dir) and pl_module.iteration == self.at and not self.fired:
            self.fired = True
            raise Interrupt


@pytest.mark.slow
def test_an_interrupted_stack_resumes_to_the_same_results(tmp_path):
    extra = ["prune.rounds=1", "instability=false", "controls=[reinit]"]
    _, whole = run(tmp_path / "whole", stack=True, extra=extra, lottery=Lottery)
    folder = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        run(folder, stack=True, extra=extra, lottery=Lottery, callback=InterruptAt(20))
    assert list(folder.rglob(".stack-*/checkpoints/last.ckpt"))  # checkpointed at 20 (checkpoint_every=10)
    _, resumed = run(folder, stack=True, extra=extra, lottery=Lottery)
    a, b = rows_by_key(whole), rows_by_key(resumed)
    for key in a:
        assert {k: v for k, v in a[key].items() if k not in TIMING} == \
               {k: v for k, v in b[key].items() if k not in TIMING}, key
    assert json.loads((folder / "exp" / "round_01" / "reinit" / "row.json").read_text())["stacked"] == 2


def tiny(seed: int):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).double()


@pytest.mark.parametrize("settings", [OptimizerSettings("adam", lr=0.01, weight_decay=1e-3),
                                      OptimizerSettings("sgd", lr=0.1, momentum=0.9, nesterov=True)])
@pytest.mark.parametrize("prime_after", [0, 2])
def test_warm_up_steps_for_a_cuda_graph_capture_are_undone_exactly(settings, prime_after):
    """``primed``: the steps a capture takes to warm up leave parameters and optimizer state as they were."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g)
    masks = [Mask({"0.weight": torch.rand(5, 6, generator=g) < 0.5, "2.weight": torch.ones(3, 5, dtype=torch.bool)})
             for _ in range(3)]

    def train(prime: bool):
        net = StackedNetworks([tiny(s) for s in range(3)])
        opt = settings.build(net.parameters())
        keep = {0: torch.stack([m["0.weight"] for m in masks]).double()}
        steps = StackedSteps(net, opt, keep, mask_gradients=False)
        for i in range(6):
            if prime and i == prime_after:
                with primed(opt, list(net.parameters()), list(net.buffers())):
                    for _ in range(3):
                        steps.eager(x * 3, y, shared=True)
            steps.eager(x, y, shared=True)
        return [p.detach().clone() for p in net.parameters()]

    for a, b in zip(train(False), train(True)):
        assert torch.equal(a, b)


def test_which_networks_stack():
    from omegaconf import OmegaConf

    from lth.lottery.stacking import AUTO_MAX_PARAMETERS, stacking_on, why_alone
    from lth.models import LeNet

    def cfg(setting, **trainer):
        return OmegaConf.create({"stack_networks": setting,
                                 "trainer": {"strategy": "auto", "devices": 1, "precision": "32-true", **trainer}})

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert not stacking_on(cfg("auto"), cpu) and stacking_on(cfg("auto"), cuda)
    assert stacking_on(cfg(True), cpu) and not stacking_on(cfg(False), cuda)
    assert not stacking_on(cfg(True, strategy="ddp", devices=2), cpu)
    assert not stacking_on(cfg(True, precision="16-mixed"), cuda)
    small, big = LeNet((1, 8, 8), 10), LeNet((1, 64, 64), 10, hidden=(1300, 100))
    assert sum(p.numel() for p in big.parameters()) > AUTO_MAX_PARAMETERS
    assert why_alone(cfg("auto"), small) is None and why_alone(cfg(True), big) is None
    assert "parameters" in why_alone(cfg("auto"), big)
    assert "dropout" in why_alone(cfg(True), LeNet((1, 8, 8), 10, dropout=0.5))


@pytest.mark.slow
def test_a_stack_reads_the_test_split_only_where_each_network_would_alone(tmp_path):
    """test_curve=false: the stack's curves have the test split exactly where each network's curve has it alone
    (new validation minima, the last point), NaN elsewhere; with test_curve=true, at every point."""
    noisy = ["optimizer.lr=0.05", "train.iterations=60", "prune.rounds=1"]  # validation loss rises between minima
    alone_lot, alone = run(tmp_path / "alone", stack=False, extra=noisy)
    stack_lot, stacked = run(tmp_path / "stacked", stack=True, extra=noisy)
    a, s = rows_by_key(alone), rows_by_key(stacked)
    assert_trained_as_alone(alone_lot, stack_lot, a, s, stack_sizes={0: 1, 1: 4})
    curves = [read_curve(stack_lot.layout.curve(1, b.key)) for b in stack_lot.branches]
    assert any(math.isnan(p["test_loss"]) for c in curves for p in c)  # some points skip the test split
    full_lot, _ = run(tmp_path / "full", stack=True, extra=[*noisy, "test_curve=true"])
    assert not any(math.isnan(p["test_loss"]) for b in full_lot.branches
                   for p in read_curve(full_lot.layout.curve(1, b.key)))
