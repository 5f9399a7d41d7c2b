"""The research branches wired into the lottery: instability, pruning at initialization and its
sanity checks, and rewind sweeps that train the dense network once."""

import csv
import json

import pytest
import pytorch_lightning as pl
import torch

from lth.analysis.pruning_at_init import pruning_at_init_mask
from lth.lottery import Lottery
from lth.lottery.branches import branch_seed
from lth.pruning import Mask
from lth.storage import load_tensors
from tests.conftest import FAST, compose_config

SMALL = ["experiment=quickstart", *FAST, "controls=[]", "train.iterations=40", "eval_every=10"]


class Trainings(pl.Callback):
    """Each training's folder, start iteration, length and first batch."""

    def __init__(self):
        self.runs = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0 and pl_module.global_step == 0:
            self.runs.append({"folder": str(trainer.default_root_dir), "start": pl_module.start_iteration,
                              "steps": trainer.max_steps, "first": batch[0][0].clone()})


def authors_selection(y, per_class, seed):
    """The 2021 paper's code, written as it is there: walk the training set in a seeded random order and
    include an example while its class has fewer than ``per_class`` included."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    counts, chosen = {}, []
    for i in order.tolist():
        c = int(y[i])
        if counts.get(c, 0) < per_class:
            chosen.append(i)
        counts[c] = counts.get(c, 0) + 1
    return chosen


def run(folder, overrides, callback=None):
    lot = Lottery(compose_config([*SMALL, *overrides]), folder)
    if callback is not None:
        lot.extra_callbacks.append(callback)
    return lot, lot.run()


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- rewind sweeps pay once
def test_a_rewind_sweep_trains_the_dense_network_once(tmp_path):
    rec = Trainings()
    lots = {k: run(tmp_path / "sweep" / f"k{k}", [f"rewind_iteration={k}", "prune.rounds=1"], rec)[0] for k in (0, 10, 20)}
    dense = [r for r in rec.runs if "/.dense/" in r["folder"]]
    assert [(r["steps"]) for r in dense] == [40, 10, 20]  # one full dense training, then replays of K iterations
    # the replayed θK is the θK a dense training captures
    ref = Trainings()
    own, _ = run(tmp_path / "alone" / "k20", ["rewind_iteration=20", "prune.rounds=1"], ref)
    assert [r["steps"] for r in ref.runs if "/.dense/" in r["folder"]] == [40]
    a, b = load_tensors(lots[20].layout.theta_k), load_tensors(own.layout.theta_k)
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    # every experiment has its own complete copy of the dense round
    for lot in lots.values():
        assert (lot.dir / "round_00" / "ticket" / "row.json").exists() and (lot.dir / "round_00" / "ticket" / "final.pt").exists()
    rows0 = [read_csv(lot.layout.results_csv)[0] for lot in lots.values()]
    assert len({(r["es_iteration"], r["test_acc_at_es"], r["min_val_loss"]) for r in rows0}) == 1


# ---------------------------------------------------------------- pruning at initialization
def test_pruning_at_init_masks_have_the_tickets_count_respect_exemptions_and_come_from_theta0(tmp_path):
    methods = ["snip", "grasp", "synflow", "magnitude_init"]
    lot, rows = run(tmp_path / "exp", ["prune=global", "prune.rate=0.3", "model.exempt=[output]", "prune.rounds=2",
                                       f"controls=[{','.join(methods)},snip_shuffle,snip_invert,snip_reinit]"])
    names = lot.rule.names
    keys = {b.name: b.key for b in lot.branches}  # snip-<digest of analysis.score_examples_per_class>, ...
    assert keys["snip"].startswith("snip-") and keys["magnitude_init"] == "magnitude_init"
    assert "output.weight" not in names
    theta0 = lot.model_at(lot.theta0)
    for level in (1, 2):
        ticket = Mask.load(lot.layout.ticket_mask(level))
        keep = sum(int(ticket[n].sum()) for n in names)
        for method in [*methods, "snip_shuffle", "snip_invert", "snip_reinit"]:
            mask = Mask.load(lot.layout.branch_mask(level, keys[method]))
            assert sum(int(mask[n].sum()) for n in names) == keep, (level, method)
            assert mask["output.weight"].all(), (level, method)  # exempt: whole, as in the ticket
        # computed from θ0 (not from trained weights), on 10 examples of every class (the authors' selection)
        x, y = lot.datamodule.splits["train"]
        chosen = authors_selection(y, 10, branch_seed(lot.seed, 0, "pruning_at_init", "data"))
        expected = pruning_at_init_mask("snip", theta0, names, keep, Mask.load(lot.layout.ticket_mask(0)),
                                        [(x[chosen], y[chosen])])
        snip = Mask.load(lot.layout.branch_mask(level, keys["snip"]))
        assert all(torch.equal(snip[n], expected[n]) for n in snip), level
        shuffled = Mask.load(lot.layout.branch_mask(level, keys["snip_shuffle"]))
        assert shuffled.remaining() == snip.remaining()  # per-layer counts kept
        assert any(not torch.equal(shuffled[n], snip[n]) for n in names)
        inverted = Mask.load(lot.layout.branch_mask(level, keys["snip_invert"]))
        assert any(not torch.equal(inverted[n], snip[n]) for n in names)
    reinit = next(b for b in lot.branches if b.name == "snip_reinit").start_state(1)
    assert not torch.equal(reinit["hidden.0.weight"], lot.theta0["hidden.0.weight"])
    branches = {r["branch"] for r in read_csv(lot.layout.results_csv)}
    assert {*methods, "snip_shuffle", "snip_invert", "snip_reinit", "ticket"} == branches


# ---------------------------------------------------------------- instability
def test_instability_barrier_path_and_ends_match_the_two_trained_networks(tmp_path):
    rec = Trainings()
    lot, rows = run(tmp_path / "exp", ["instability=true", "prune.rounds=1", "rewind_iteration=10"], rec)
    copy = next(b for b in lot.branches if b.name == "instability")
    table = read_csv(lot.layout.results_csv)
    for level in (0, 1):
        row = next(r for r in table if r["round"] == str(level) and r["branch"] == "instability")
        ticket = next(r for r in table if r["round"] == str(level) and r["branch"] == "ticket")
        path = read_csv(lot.layout.branch(level, copy.key) / "path.csv")
        assert len(path) == 30 and float(path[0]["alpha"]) == 0.0 and float(path[-1]["alpha"]) == 1.0
        errors = [float(p["error"]) for p in path]
        # α=0 is the ticket (at level 0 with K > 0 its restart from θK), α=1 the copy: their final test errors
        first = ticket if level else json.loads((lot.layout.branch(0, copy.key) / "reference" / "row.json").read_text())
        assert errors[0] == pytest.approx(1 - float(first["final_test_acc"]), abs=1e-12)
        assert errors[-1] == pytest.approx(1 - float(row["final_test_acc"]), abs=1e-12)
        assert float(row["instability"]) == pytest.approx(max(errors) - (errors[0] + errors[-1]) / 2)
    # the copy starts where the ticket starts (θK, iteration K) but sees another data order
    copies = [r for r in rec.runs if r["folder"].endswith(copy.key)]
    tickets = [r for r in rec.runs if r["folder"].endswith("round_01/ticket")]
    assert [r["start"] for r in copies] == [10, 10] and tickets[0]["start"] == 10
    assert not torch.equal(copies[1]["first"], tickets[0]["first"])
    assert lot.layout.figure("instability").exists()
