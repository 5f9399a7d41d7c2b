"""Issue #21's protocol defects, each checked against what the papers and the authors' code define:
level-0 instability with rewinding, and the data pruning at initialization scores on."""

import csv

import pytest
import torch

from lth.lottery import Lottery
from lth.lottery.stability_branch import Instability
from lth.storage import load_tensors
from tests.conftest import FAST, compose_config
from tests.test_research_branches import Trainings as FirstBatches  # each training's folder, start, first batch
from tests.test_research_branches import authors_selection

SMALL = ["experiment=quickstart", *FAST, "controls=[]", "train.iterations=40", "eval_every=10"]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- 1. level-0 instability with K > 0
def test_with_the_same_sgd_noise_the_two_copies_coincide_at_every_level_level_0_included(tmp_path, monkeypatch):
    """Both ends of the path must be trained the same way from θK, differing only in SGD noise: give the
    copy the ticket's own data order and the two ends must be the same network (barrier 0) at every
    level. lth <= 0.2 compared, at level 0, the dense round (trained from θ0 with its optimizer state
    carried through K) with a copy restarted at θK: different networks even with the same noise."""
    monkeypatch.setattr(Instability, "data_seed", lambda self, level: self.lot.seed)
    lot = Lottery(compose_config([*SMALL, "instability=true", "prune.rounds=1", "rewind_iteration=10"]), tmp_path / "e")
    lot.run()
    key = next(b.key for b in lot.branches if b.name == "instability")  # instability-<settings digest>
    for level in (0, 1):
        path = read_csv(lot.layout.branch(level, key) / "path.csv")
        errors = [float(p["error"]) for p in path]
        assert max(errors) - min(errors) == 0.0, level
        row = next(r for r in read_csv(lot.layout.results_csv) if r["round"] == str(level) and r["branch"] == "instability")
        assert float(row["instability"]) == 0.0
    ref = load_tensors(lot.layout.branch(0, key) / "reference" / "final.pt")
    copy = lot.final_weights(0, key)
    assert all(torch.equal(ref[k], copy[k]) for k in ref)


def test_level_0_reference_restarts_from_theta_k_with_the_tickets_data_order(tmp_path):
    rec = FirstBatches()
    lot = Lottery(compose_config([*SMALL, "instability=true", "prune.rounds=1", "rewind_iteration=10"]), tmp_path / "e")
    lot.extra_callbacks.append(rec)
    lot.run()
    key = next(b.key for b in lot.branches if b.name == "instability")  # instability-<settings digest>
    ref = next(r for r in rec.runs if r["folder"].endswith(f"round_00/{key}/reference"))
    copy0 = next(r for r in rec.runs if r["folder"].endswith(f"round_00/{key}"))
    ticket1 = next(r for r in rec.runs if r["folder"].endswith("round_01/ticket"))
    assert ref["start"] == copy0["start"] == ticket1["start"] == 10
    assert torch.equal(ref["first"], ticket1["first"])  # the ticket's data order from iteration K
    assert not torch.equal(ref["first"], copy0["first"])  # the copy: other SGD noise
    # α = 0 is the reference's final test error, exactly; the dense round is not on the path
    table = read_csv(lot.layout.results_csv)
    assert {r["branch"] for r in table if r["round"] == "0"} == {"ticket", "instability"}  # the reference is no row
    path = read_csv(lot.layout.branch(0, key) / "path.csv")
    ref_row = read_csv_json(lot.layout.branch(0, key) / "reference" / "row.json")
    assert float(path[0]["error"]) == pytest.approx(1 - ref_row["final_test_acc"], abs=1e-12)
    # a re-run trains nothing more (the reference is found on disk)
    again = FirstBatches()
    lot2 = Lottery(compose_config([*SMALL, "instability=true", "prune.rounds=1", "rewind_iteration=10"]), tmp_path / "e")
    lot2.extra_callbacks.append(again)
    lot2.run()
    assert again.runs == []
    assert lot.progress.trainings == lot2.progress.trainings == lot2.progress.done == 5  # the reference counted


def read_csv_json(path):
    import json

    return json.loads(path.read_text())


# ---------------------------------------------------------------- 2. the data pruning at init scores on
def test_class_balanced_sample_is_the_authors_selection():
    from lth.analysis.pruning_at_init import class_balanced_sample

    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 7, (500,), generator=gen)
    x = torch.arange(500).float()[:, None]
    for seed in (0, 1, 12345):
        xs, ys = class_balanced_sample(x, y, 4, seed)
        assert xs[:, 0].long().tolist() == authors_selection(y, 4, seed)
        assert torch.equal(ys, y[xs[:, 0].long()])
        assert torch.bincount(ys, minlength=7).tolist() == [4] * 7
    with pytest.raises(ValueError, match="fewer than"):
        class_balanced_sample(x[:20], y[:20], 10, 0)


def test_snip_and_grasp_score_ten_examples_of_every_class_of_the_training_split(tmp_path, monkeypatch):
    """The public reference code scores about 10 examples per class, class-balanced (the 2021 paper's
    ``snip10``/``grasp10``, GraSP's ``samples_per_class: 10``); lth <= 0.2 scored the ticket's first training
    batch (60 examples for LeNet, whatever classes they were)."""
    import lth.lottery.pai_branches as pai

    seen = []
    real = pai.pruning_at_init_mask

    def spy(method, model, names, keep, base, batches=None, **kw):
        if method in ("snip", "grasp"):
            seen.append((method, [(x.clone(), y.clone()) for x, y in batches], model.training))
        return real(method, model, names, keep, base, batches, **kw)

    monkeypatch.setattr(pai, "pruning_at_init_mask", spy)
    lot = Lottery(compose_config([*SMALL, "controls=[snip,grasp]", "prune.rounds=2"]), tmp_path / "e")
    lot.run()
    assert sorted(m for m, _, _ in seen) == ["grasp", "grasp", "snip", "snip"]  # each method, levels 1 and 2
    train_x, train_y = lot.datamodule.splits["train"]
    classes = int(train_y.max()) + 1
    for method, batches, _ in seen:
        assert len(batches) == 1
        x, y = batches[0]
        assert torch.bincount(y, minlength=classes).tolist() == [10] * classes
        # every example is a training example as it is stored (no augmentation, not val/test)
        rows = (x.flatten(1)[:, None, :] == train_x.flatten(1)[None, :, :]).all(-1)
        assert rows.any(1).all()
        assert torch.equal(train_y[rows.float().argmax(1)], y)
    first = seen[0][1][0]
    assert all(torch.equal(b[0][0], first[0]) for _, b, _ in seen)  # the same examples for every method and level
