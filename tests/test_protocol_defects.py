"""The protocol defects found by reading lth 0.1 against the paper, each checked against an
independent computation of what the paper defines; and reuse of finished work when branches change."""

import json

import pytest
import pytorch_lightning as pl
import torch

from lth.lottery import ExperimentError, Lottery
from lth.lottery.branches import branch_seed
from lth.pruning import Mask, prunable_tensors
from lth.storage import CorruptFileError, load_tensors
from lth.training.round import optimizer_settings
from tests.conftest import FAST, compose_config

SMALL = ["experiment=quickstart", *FAST, "controls=[]", "train.iterations=40", "eval_every=10"]


class Trainings(pl.Callback):
    """Records each training (its folder) and the learning rate of each optimizer step."""

    def __init__(self):
        self.folders, self.lrs = [], []

    def on_train_start(self, trainer, pl_module):
        self.folders.append(trainer.default_root_dir)
        self.lrs.append({})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs[-1][pl_module.iteration] = trainer.optimizers[0].param_groups[0]["lr"]


def run(folder, overrides, callback=None):
    lot = Lottery(compose_config([*SMALL, *overrides]), folder)
    if callback is not None:
        lot.extra_callbacks.append(callback)
    return lot, lot.run()


def keep_largest(weights: dict, names: list[str], keep: int) -> dict:
    """Independent one-shot global magnitude pruning: the ``keep`` largest |w| over ``names``."""
    flat = torch.cat([weights[n].abs().flatten() for n in names])
    order = torch.argsort(flat, descending=True, stable=True)
    kept = torch.zeros_like(flat, dtype=torch.bool)
    kept[order[:keep]] = True
    out, offset = {}, 0
    for n in names:
        out[n] = kept[offset:offset + weights[n].numel()].view_as(weights[n])
        offset += weights[n].numel()
    return out


# ---------------------------------------------------------------- 1. one-shot prunes the dense round's weights
def test_oneshot_masks_are_the_dense_weights_pruned_straight_to_each_level(tmp_path):
    lot, rows = run(tmp_path / "oneshot" / "exp", ["prune=global", "prune.rate=0.2", "prune.rounds=3",
                                                   "prune.schedule=oneshot"])
    dense = load_tensors(lot.dir / "round_00" / "ticket" / "final.pt")
    names = [t.name for t in prunable_tensors(lot.new_model(0))]
    total = sum(dense[n].numel() for n in names)
    for level in (1, 2, 3):
        mask = Mask.load(lot.dir / f"round_{level:02d}" / "mask.pt")
        expected = keep_largest(dense, names, total - int((1 - 0.8**level) * total + 0.5))
        assert all(torch.equal(mask[n], expected[n]) for n in names), level
    # and that is not what iterative pruning gives (lth 0.1's one-shot was iterative in disguise)
    it, _ = run(tmp_path / "iterative" / "exp", ["prune=global", "prune.rate=0.2", "prune.rounds=3"])
    iterative = Mask.load(it.dir / "round_03" / "mask.pt")
    oneshot = Mask.load(lot.dir / "round_03" / "mask.pt")
    assert iterative.remaining() != oneshot.remaining() or any(not torch.equal(iterative[n], oneshot[n]) for n in names)


def test_layerwise_oneshot_prunes_each_tensor_of_the_dense_weights(tmp_path):
    lot, _ = run(tmp_path / "exp", ["prune.schedule=oneshot", "prune.rounds=2"])
    dense = load_tensors(lot.dir / "round_00" / "ticket" / "final.pt")
    rates = lot.cfg.prune.rates
    for t in prunable_tensors(lot.new_model(0)):
        keep = t.numel - int((1 - (1 - float(rates[t.kind])) ** 2) * t.numel + 0.5)
        expected = keep_largest(dense, [t.name], keep)[t.name]
        assert torch.equal(Mask.load(lot.dir / "round_02" / "mask.pt")[t.name], expected), t.name


# ---------------------------------------------------------------- 2. every learning rate set takes effect
@pytest.mark.parametrize("overrides, expected", [
    (["model=vgg19", "optimizer.lr=0.01", "lr_warmup=true"], 0.01),
    (["model=conv2", "optimizer.lr=1e-3", "lr_warmup=true"], 1e-3),
    (["model=conv2", "lr_warmup=true"], 2e-4),
    (["model=resnet20", "lr_warmup=true"], 0.03),  # the paper's protocol: warm-up to 0.03
    (["model=resnet20"], 0.1),
    (["model=resnet20", "lr_warmup=true", "optimizer.lr=0.05"], 0.05),
])
def test_the_learning_rate_given_is_the_one_trained_with(overrides, expected):
    assert optimizer_settings(compose_config(overrides)).lr == pytest.approx(expected)


def test_the_warmup_ramps_to_optimizer_lr_in_a_run(tmp_path):
    rec = Trainings()
    run(tmp_path / "exp", ["lr_warmup=true", "warmup.iterations=20", "optimizer.lr=0.004", "prune.rounds=1"], rec)
    dense = rec.lrs[0]
    assert dense[0] == 0.0 and dense[10] == pytest.approx(0.002) and dense[20] == pytest.approx(0.004)


# ---------------------------------------------------------------- 3. the start point is evaluated
class Worsen(pl.Callback):
    """Adds large noise to the surviving weights before every group of steps: the network only gets worse."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        gen = torch.Generator().manual_seed(pl_module.iteration)
        with torch.no_grad():
            for p in pl_module.model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 3 * (p != 0))  # pruned weights stay 0


def test_a_network_that_never_improves_stops_early_at_its_start(tmp_path):
    # (divergence_factor=0: the worsening network must not be stopped as diverged)
    lot, rows = run(tmp_path / "exp", ["prune.rounds=1", "rewind_iteration=10", "divergence_factor=0"], Worsen())
    for row in rows:
        start = 0 if row["round"] == 0 else 10
        curve = (lot.dir / f"round_{row['round']:02d}" / "ticket" / "curve.csv").read_text().splitlines()
        assert int(float(curve[1].split(",")[0])) == start  # first point: the start
        assert row["es_iteration"] == start, row


# ---------------------------------------------------------------- 4. no two (seed, level, branch) share a draw
def test_control_draws_differ_across_seeds_levels_and_branches(tmp_path):
    seeds = {branch_seed(s, level, b) for s in range(5) for level in range(21) for b in ("reinit", "random_prune")}
    assert len(seeds) == 5 * 21 * 2
    lots = {s: run(tmp_path / f"s{s}" / "exp", [f"seed={s}", "prune.rounds=2", "controls=[reinit,random_prune]",
                                                 "train.iterations=10", "eval_every=10"])[0] for s in (0, 1)}
    # lth 0.1: seed s at level l+1 drew the same re-initialisation and random mask as seed s+1 at level l
    a, b = lots[0].branches, lots[1].branches
    reinit = lambda lot, level: next(x for x in lot.branches if x.name == "reinit").start_state(level)  # noqa: E731
    assert not torch.equal(reinit(lots[0], 2)["hidden.0.weight"], reinit(lots[1], 1)["hidden.0.weight"])
    m0 = Mask.load(lots[0].dir / "round_02" / "random_prune" / "mask.pt")
    m1 = Mask.load(lots[1].dir / "round_01" / "random_prune" / "mask.pt")
    assert a and b and not torch.equal(m0["hidden.0.weight"], m1["hidden.0.weight"][: m0["hidden.0.weight"].shape[0]])


# ---------------------------------------------------------------- reuse: branches are outside the identity
def test_adding_a_control_to_a_finished_experiment_trains_only_the_control(tmp_path):
    folder = tmp_path / "exp"
    _, first = run(folder, ["prune.rounds=2"])
    before = {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
              for p in folder.rglob("*") if p.is_file() and ("round_" in p.as_posix() or p.suffix == ".pt")}
    rec = Trainings()
    _, second = run(folder, ["prune.rounds=2", "controls=[reinit]"], rec)
    trained = sorted(str(f).split("/exp/")[1] for f in rec.folders)
    assert trained == ["round_01/reinit", "round_02/reinit"]
    for path, (data, mtime) in before.items():  # masks, tickets, rows untouched
        assert (folder / path).read_bytes() == data and (folder / path).stat().st_mtime_ns == mtime, path
    tickets = [r for r in second if r["branch"] == "ticket"]
    assert tickets == first
    assert [(r["round"], r["branch"]) for r in second if r["branch"] == "reinit"] == [(1, "reinit"), (2, "reinit")]


def test_a_folder_of_the_previous_format_is_refused_with_what_to_do(tmp_path):
    folder = tmp_path / "exp"
    folder.mkdir()
    lot = Lottery(compose_config([*SMALL, "prune.rounds=1"]), folder)
    (folder / "experiment.json").write_text(json.dumps({"config_hash": "0123abcd", "name": "exp"}))
    with pytest.raises(ExperimentError, match="predates.*new folder"):
        lot.run()


def test_a_damaged_row_is_named_with_what_to_do(tmp_path):
    folder = tmp_path / "exp"
    run(folder, ["prune.rounds=1"])
    (folder / "round_01" / "ticket" / "row.json").write_text('{"round": 1}')
    with pytest.raises(CorruptFileError, match=r"round_01/ticket/row.json is damaged \(no valid .* delete"):
        run(folder, ["prune.rounds=1"])
